"""The apply daemon: the loop that drains the capture journal into the target, and its metrics."""
