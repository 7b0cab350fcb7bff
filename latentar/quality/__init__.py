"""Sample quality: FID, KID, precision/recall, density/coverage, IS and class accuracy of a set
of images against a reference split, in the features of a dataset classifier (offline) or of
Inception (the numbers papers print; needs its weights on the machine).

    features.py   the feature extractors ("classifier:PATH", "inception") and the Inception weights
    scores.py     the metrics over two feature matrices (torch-fidelity, and density/coverage)
    measure.py    features once, then every metric: `measure`
    inputs.py     images from a .npy file or a folder of image files
    library.py    the optional extra latentar[metrics] (torch-fidelity), imported when used

``latentar eval-samples`` measures from the command line, ``latentar train-classifier`` trains
the classifier.
"""

from latentar.quality.features import INCEPTION, feature_extractor, find_inception_weights
from latentar.quality.library import MissingExtraError
from latentar.quality.measure import measure
from latentar.quality.scores import density_coverage, fid, inception_score, kid, precision_recall, sample_scores

__all__ = ["INCEPTION", "MissingExtraError", "density_coverage", "feature_extractor", "fid",
           "find_inception_weights", "inception_score", "kid", "measure", "precision_recall", "sample_scores"]
