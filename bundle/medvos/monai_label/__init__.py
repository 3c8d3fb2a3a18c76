"""MONAI Label integration: semi-automatic annotation of cines by few-shot propagation (app in ``bundle/monailabel_app``)."""
