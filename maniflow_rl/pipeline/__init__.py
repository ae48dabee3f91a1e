"""End-to-end jobs built from the library parts: fine-tuning from a checkpoint, and the
resumable ``run`` pipeline (demos -> pretrain -> eval -> PPO -> eval -> report)."""
