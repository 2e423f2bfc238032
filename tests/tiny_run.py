"""A training config for a one-step run of fsrst_x4_small on tiny folders: what the tests of
warm starts and new model settings train and export."""


def tiny_run_config(name: str, faces: str, model: dict, init: dict, **data) -> dict:
    """`faces` trains and validates; `data` adds to the config's data section (e.g. clips)."""
    return {
        "variant": "fsrst_x4_small", "name": name, "seed": 1, "model": model, "init": init,
        "data": {"train": faces, "val": faces, "num_references": 3, **data},
        "augment": {"flip": True},
        "train": {"batch_size": 2, "learning_rate": 1e-3, "lr_milestones": [], "lr_gamma": 0.5,
                  "max_steps": 1, "threads": 1},
        "log": {"checkpoint_every_s": 300, "validate_every_steps": 1, "validate_samples": 2},
    }
