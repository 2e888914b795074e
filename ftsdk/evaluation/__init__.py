"""Evaluating models side by side: metrics, the forgetting check and the run report."""
