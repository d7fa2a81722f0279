"""Onboard side: load a bundle, run the policy in a hard-timed loop. Never imports torch."""
