"""Tasks: pretrain, finetune, linprobe, evaluate and demo, wiring models + data + engine."""
