"""One run: ``models`` (backbones + embedding head) -> ``objective`` (method + regularizer -> named
loss terms) -> ``engine`` (fit / train_one_epoch / evaluate; never branches on a method name) ->
``runner`` (skip if finished, resume if interrupted, lock, checkpoint, record in MLflow)."""
