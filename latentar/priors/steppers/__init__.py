"""The fast steppers of the conv priors (see ``latentar.priors.engine``), one file each."""
