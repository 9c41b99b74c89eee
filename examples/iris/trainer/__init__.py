"""Iris trainer package for mlengine (an AI Platform style training application).

Modules:
    task: PyTorch DNN classifier, exported with `torch.export` (``model.pt2``).
    sklearn_task: scikit-learn pipeline, saved with joblib (``model.joblib``).
    ddp_task: distributed PyTorch (DDP over gloo) that records proof of gradient averaging.
"""
