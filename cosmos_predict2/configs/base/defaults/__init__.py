"""Config groups of the ConfigStore (model, optimizer, scheduler, ckpt_type, callbacks, dataloader_val)."""
