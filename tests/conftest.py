"""Settings for the whole test session."""

import os

# Every Ray the tests start (local `ray.init`, `ray start --head` clusters, `ray job submit`) runs without token
# authentication: a process caches the token of the first Ray it meets, and the default token file in ~/.ray is
# shared with every other Ray on the machine, so mixing authenticated and unauthenticated clusters in one pytest
# process makes actors die at start. The test clusters listen on 127.0.0.1 only.
os.environ["RAY_AUTH_MODE"] = "disabled"
