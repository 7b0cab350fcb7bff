"""Shared layers: masked and shifted convolutions, gated units, attention, LSTM helpers, class
biases; and their incremental evaluation for fast sampling: ``passes`` (one network, whole maps
or one step), ``caches`` (what a generation keeps), ``windows`` (a conv at one row or position)
and ``stepping`` (how each layer type steps, registered per type)."""
