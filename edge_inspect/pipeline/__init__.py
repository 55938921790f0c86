"""The streaming pipeline: capture → preprocess → infer → decide → publish, with bounded queues."""
