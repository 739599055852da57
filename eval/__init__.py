"""mcn.eval"""
