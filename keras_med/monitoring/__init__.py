"""Watching a deployed model: what it is asked, against what it was validated on (`keras-med monitor`)."""
