"""A toy-sized Hugging Face EfficientNet (random weights, built from its config, returned unwrapped: its forward
returns an ImageClassifierOutput): litert-torch's PT2E int8 leaves every convolution in float on it."""


def build_model():
    import torch
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    torch.manual_seed(0)
    cfg = EfficientNetConfig(
        image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10
    )
    return EfficientNetForImageClassification(cfg).eval()
