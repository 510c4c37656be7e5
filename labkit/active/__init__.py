"""Phase 40: active learning for P10's detector — which frames are worth labelling?

Read in this order: ``pool`` (a skewed log of shapes frames), ``uncertainty`` (entropy, margin,
least confidence; per-image aggregation), ``mc_dropout`` (dropout at inference, boxes matched
across passes), ``inference`` (one pass over the pool: detections, top cell, features),
``selectors`` (random, uncertainty, MC dropout, diversity-aware; one ``select`` interface),
``labelling`` (the ground truth, or a person), ``loop`` (train → evaluate → infer → select →
label, resumable), ``curves`` (label-efficiency curves, AUC, the gap test), ``report`` (the
comparison's files, read back), ``task`` (build, run and resume the comparison), ``done`` (the
"done when" checks). Builds on ``labkit.detection`` only. Explained in notebooks/40_active_learning_detection.py.
"""
