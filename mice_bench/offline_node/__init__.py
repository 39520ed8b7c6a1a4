"""The suite on a GPU node without internet: ``mice-bench offline-node stage | run | collect``.

HPC GPU nodes often have no network. :mod:`.stage` builds one folder on a connected machine
(model, collections, candidate runs, training data, wheels, this mice-bench); on the node one
command (:mod:`.node`, ``node.sh``) runs the GPU checks, the latency protocols and a training
mini-replication (:mod:`.study`) inside a time budget and writes one archive; back on the
connected machine :mod:`.collect` turns the archive into ``results/`` and the report.
:mod:`.formats` holds the plain-file formats they share, :mod:`.summary` reads a run's folder.
"""
