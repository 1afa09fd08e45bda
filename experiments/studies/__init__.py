"""Short comparison studies that train several networks side by side:

    python -m operad.experiments.studies.pide           # nonlocal PIDE nets vs the local baseline
    python -m operad.experiments.studies.twin           # twin CMod nets vs their CNN twins
    python -m operad.experiments.studies.units          # Min and dendritic units vs ReLU
    python -m operad.experiments.studies.rotation_hnet  # H-Net rotation curves
    python -m operad.experiments.studies.tightness      # Lipschitz bound / estimate per family and model
    python -m operad.experiments.studies.pruning_compare     # operad.rewrite.prune vs Torch-Pruning, ResNet-56
    python -m operad.experiments.studies.pruning_structures  # both pruners on DenseNet, MobileNet, Ghost, SK
"""
