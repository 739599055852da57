"""What a run reports: JSONL metrics (appended on resume), TensorBoard scalars, the bar, the loss plot."""

from __future__ import annotations

import json

from mcn.train.run_log import METRICS, PLOT, RunLog, plot_losses, read_metrics


def test_metrics_go_to_jsonl_under_their_own_names_and_resume_appends(tmp_path):
    log = RunLog(tmp_path, enabled=True, total_steps=4, start_step=0, progress=False, tensorboard=False)
    log.log(1, 0, {"loss": 3.0, "contrastive_loss": 2.0, "lr": 0.1})
    log.log(2, 0, {"loss": 2.5, "contrastive_loss": 1.5, "lr": 0.2})
    log.close()
    resumed = RunLog(tmp_path, enabled=True, total_steps=4, start_step=2, progress=False, tensorboard=False)
    resumed.log(3, 1, {"loss": 2.0})
    resumed.close()
    records = read_metrics(tmp_path)
    assert [(r["step"], r["epoch"], r["loss"]) for r in records] == [(1, 0, 3.0), (2, 0, 2.5), (3, 1, 2.0)]
    assert records[1]["contrastive_loss"] == 1.5 and records[1]["lr"] == 0.2 and "time" in records[0]
    assert all(json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines())


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path, enabled=False, total_steps=4, start_step=0)
    log.log(1, 0, {"loss": 1.0})
    log.advance()
    log.close()
    assert list(tmp_path.iterdir()) == [] and read_metrics(tmp_path) == []


def test_the_bar_shows_the_loss_terms(tmp_path, capsys):
    log = RunLog(tmp_path, enabled=True, total_steps=2, start_step=0, progress=True, tensorboard=False)
    log.log(1, 0, {"loss": 1.25, "cluster_loss": 0.5, "clips_per_s": 321.0})
    log.advance()
    log.log(2, 0, {"loss": 1.0, "cluster_loss": 0.25, "clips_per_s": 320.0})
    log.advance()
    log.close()
    bar = capsys.readouterr().err
    assert "2/2" in bar and "loss=1" in bar and "cluster=0.25" in bar and "clips/s=320" in bar


def test_tensorboard_gets_every_metric(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path, enabled=True, total_steps=2, start_step=0, progress=False, tensorboard=True)
    log.log(1, 0, {"loss": 2.0, "reconstruction_loss": 0.5})
    log.log(2, 0, {"loss": 1.0, "reconstruction_loss": 0.25})
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/reconstruction_loss"}
    assert [e.value for e in events.Scalars("train/loss")] == [2.0, 1.0]


def test_loss_plot_is_drawn_from_the_metrics(tmp_path):
    assert plot_losses(tmp_path) is None  # no metrics yet
    log = RunLog(tmp_path, enabled=True, total_steps=3, start_step=0, progress=False, tensorboard=False)
    log.log(1, 0, {"lr": 0.1})
    log.close()
    assert plot_losses(tmp_path) is None  # no loss series
    log = RunLog(tmp_path, enabled=True, total_steps=3, start_step=0, progress=False, tensorboard=False)
    for step, loss in [(1, 3.0), (2, 2.0), (2, 1.9), (3, 1.0)]:  # a resumed run repeats step 2
        log.log(step, 0, {"loss": loss, "cluster_loss": loss / 2})
    log.close()
    path = plot_losses(tmp_path)
    assert path == tmp_path / PLOT and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
