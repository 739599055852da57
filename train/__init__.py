"""mcn.train"""
