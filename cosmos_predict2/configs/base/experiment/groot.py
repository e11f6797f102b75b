"""NVIDIA's GR00T Dreams example (post-training_video2world_gr00t.md): full fine-tuning on the GR1-100 robot
videos at 480p, datasets/benchmark_train/gr1 (metas/ and t5_xxl/ written by
`scripts/get_t5_embeddings_from_groot_dataset.py` from its metadata.csv).

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_training_2b_groot_gr1_480

Names and values are the reference's (configs/base/experiment/groot.py): lr 2^-14.5, lambdalinear warm-up 1000 /
cycle 100k / f_max 0.2 / f_min 0.1, a checkpoint every 200, iter_speed after 200 iterations, FSDP shard 8 (2B) /
32 (14B), context parallelism 1 (2B) / 4 (14B), loader `groot_gr1` (93 frames at 432x768, batch 1, 8 workers).
The reference's `model.config.num_video_frames=93` and `resolution="480"` are what that dataset node already says
(our model takes frames and size from the data); the reference sets no max_iter, so the base value applies.
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import merge, register_experiments


def groot_experiment(size: str, fsdp_shard_size: int, context_parallel_size: int) -> dict:
    return dict(
        defaults=[
            {"override /model": f"predict2_video2world_fsdp_{size}"},
            {"override /optimizer": "fusedadamw"},
            {"override /ckpt_type": "standard"},
            {"override /dataloader_val": "mock"},
            {"override /scheduler": "lambdalinear"},
            {"override /dataloader_train": "groot_gr1"},
            "_self_",
        ],
        model=dict(config=dict(
            fsdp_shard_size=fsdp_shard_size, pipe_config=dict(guardrail_config=dict(enabled=False))
        )),
        optimizer=dict(lr=2 ** (-14.5)),
        scheduler=dict(f_max=[0.2], f_min=[0.1], warm_up_steps=[1_000], cycle_lengths=[100_000]),
        job=dict(project="posttraining", group="video2world", name=f"{size}_groot_gr1_480"),
        model_parallel=dict(context_parallel_size=context_parallel_size),
        trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=200))),
        checkpoint=dict(save_iter=200),
    )


predict2_video2world_training_2b_groot_gr1_480 = merge(groot_experiment("2b", 8, 1))
predict2_video2world_training_14b_groot_gr1_480 = merge(groot_experiment("14b", 32, 4))

register_experiments(
    globals(), predict2_video2world_training_2b_groot_gr1_480, predict2_video2world_training_14b_groot_gr1_480
)
