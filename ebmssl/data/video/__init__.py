"""Video: seeded clips of moving items with K discrete plausible moves per step (dynamics.py), the clip
dataset that carries them through the image pipeline (clip_dataset.py). The registered dataset is
``moving_fashion`` (ebmssl/data/datasets/moving_fashion.py), the view pipeline ``clip_views``
(ebmssl/data/views/clips.py). docs/design.md, "Video clips and actions", explains the layout."""
