"""The units the flow calls. Each wraps a pure function from segmentation.core with I/O."""
