"""Shared layers: masked and shifted convolutions, gated units, attention, LSTM helpers."""
