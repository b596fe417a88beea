"""Evaluations of frozen encoders. Each function takes a timm ViT (or a vidssl `Encoder`) and data
and returns plain dicts of metrics; `vidssl.cli.evaluate` prints and writes them.

features      datasets, eval transforms, feature functions, the on-disk feature cache
knn           DINO weighted k-NN (SPEC 4.1)
linear        DINO linear probe and the fast cached-feature mode (SPEC 4.2)
davis         DAVIS-2017 label propagation (SPEC 4.3); davis_metrics: J and F; palette: DAVIS colours
unsup_seg     k-means segmentation with Hungarian / many-to-one matching (SPEC 4.5); seg_data: VOC/DAVIS
report        JSON output and the one-line headline
"""
