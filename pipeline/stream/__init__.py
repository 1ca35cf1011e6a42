"""The streaming shell: the Faust app and what it needs around the detector core."""
