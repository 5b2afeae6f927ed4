"""The companion studies, each with its settings beside it: Liu et al.'s collapse to w = 0
(collapse), Kanai et al.'s smoothness and toy surfaces (smoothness, toy), and Xu et al.'s
adversarial fine-tuning (finetune). advland.pipeline.settings checks them all."""
