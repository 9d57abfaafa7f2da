"""Felix, the per-node agent: syncer → calculation graph → event sequencer → managers → drivers."""
