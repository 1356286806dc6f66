"""Text components shared by the models: pretrained sentence encoders (and, later, tokenizers
and language-model backbones), all loadable offline."""
