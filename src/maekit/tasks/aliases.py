"""The one alias table of the task options (imported by :mod:`.config` and :mod:`.validate`)."""

from __future__ import annotations

# The one alias table: other spellings of an option (Hugging Face / MindFormers / timm / PASSL /
# constructor names). Accepted as keys of --config YAML, TrainingArguments and as hidden flags.
ALIASES: dict[str, str] = {
    "img_size": "input_size", "image_size": "input_size",
    "num_classes": "nb_classes", "num_labels": "nb_classes",
    "drop_path_rate": "drop_path",
    "num_channels": "in_chans",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
    "learning_rate": "lr", "lr_end": "min_lr",
    "gradient_accumulation_steps": "accum_iter",
    "dataloader_num_workers": "num_workers", "num_parallel_workers": "num_workers",
    "label_smoothing": "smoothing", "mixup_alpha": "mixup", "cutmix_alpha": "cutmix",
    "norm_pixel_loss": "norm_pix_loss", "max_grad_norm": "clip_grad",
    "dataset_dir": "data_path", "resume_from_checkpoint": "resume", "checkpoint": "resume",
    "local-rank": "local_rank", "top_k": "topk",
    # maekit knn's first spellings; the knn_ names are the ones of maekit pretrain's k-NN monitor
    "k": "knn_k", "temperature": "knn_temperature", "bank_per_class": "knn_bank_per_class",
    "max_queries": "knn_max_queries",
}
