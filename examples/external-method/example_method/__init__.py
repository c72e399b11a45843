"""An example method package for inbetween-bench (docs/your-method.md): one method, mean-blend."""
