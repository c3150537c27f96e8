"""Stage ``calibration@{arch}``: are the scores probabilities, and what do they mean in the survey?"""
