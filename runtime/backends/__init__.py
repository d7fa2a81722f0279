"""Inference backends behind one small runner interface."""
