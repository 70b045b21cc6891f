"""The study's published numbers (../shared/STUDY.md), to print beside ours."""

TABLE1 = {  # code size -> validation (MSE, MAE); the study trained with MSE
    2048: (0.04, 0.15),
    4096: (0.02, 0.10),
    8192: (0.01, 0.08),
}
TABLE2 = {  # model -> (validation "accuracy", training log-loss, validation log-loss)
    "frozen_encoder": (0.4139, 0.136, 0.781),
    "encoder": (0.4672, 0.000, 2.693),
    "deep_cnn": (0.6721, 0.466, 1.033),
}
TABLE3 = {  # loss -> validation (Dice, IoU)
    "bce": (0.55, 0.39),
    "dice": (0.68, 0.54),
}
STUDY_CLASSES = ["cat", "motorbike", "bottle"]
