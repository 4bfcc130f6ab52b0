"""Launches moto's server with Kinesis resharding patched to behave like the real service.

Run as ``<venv>/bin/python moto_server.py -H 127.0.0.1 -p PORT`` (same arguments as the
``moto_server`` console script, whose ``main`` this ends up calling).

Why: moto (checked against 5.2.5) emulates resharding differently from Kinesis, and the
integration tests exercise a consumer that follows shard lineage, so the difference matters:

* ``SplitShard`` *moves* the parent's records into the two children (re-putting them) and
  ``MergeShards`` *copies* both parents' records into the new shard.  The service does neither:
  a closed parent keeps its records until they expire, and the children only receive records
  written after the reshard.  A consumer that reads parents before children would see every
  record twice under moto.
* ``GetRecords`` on a closed shard never ends: moto keeps handing out a ``NextShardIterator``.
  The service returns no ``NextShardIterator`` and a ``ChildShards`` list once the reader has
  consumed the last record of a closed shard, which is how consumers learn a shard is finished.

Patches applied here:

1. ``Stream.split_shard`` / ``Stream.merge_shards``: the parents' records are set aside around
   the original call (so it has nothing to move or copy) and put back afterwards.  The parents
   stay closed, so ``ListShards``/``DescribeStream`` report their ``EndingSequenceNumber`` as the
   last sequence number they hold.  Sequence numbers of the children continue after their
   parents' last one (as in the service, where they keep increasing across a reshard) instead
   of restarting at 1.  Merging a shard that is already closed is refused, as the service does.
2. ``Stream.get_shard_for_key``: new records are routed only to *open* shards (moto also looks at
   closed parents, which come first, so writes after a split would land in the closed parent),
   and a hash key equal to a shard's ``EndingHashKey`` belongs to that shard.
3. ``GetRecords``: on a closed shard, when the returned batch reaches the shard's last record
   (or the iterator is already past it), the response has no ``NextShardIterator`` and lists
   ``ChildShards`` (the shards whose parent or adjacent parent is this one).  Responses for open
   shards, and for closed shards not yet read to the end, are unchanged.

Nothing else of moto is touched.
"""

import sys
from collections import OrderedDict
from functools import wraps

from moto.kinesis import models as kinesis_models
from moto.kinesis import responses as kinesis_responses
from moto.kinesis.exceptions import InvalidArgumentError
from moto.kinesis.utils import decompose_shard_iterator

Shard = kinesis_models.Shard
Stream = kinesis_models.Stream
KinesisResponse = kinesis_responses.KinesisResponse


def _last_sequence_number(shard):
    """The highest sequence number the shard has handed out (0 when none)."""
    return max(shard.get_max_sequence_number(), getattr(shard, "_rivulet_seq_floor", 0))


def _children(stream, shard_id):
    return [
        s
        for s in stream.shards.values()
        if s.parent == shard_id or s.adjacent_parent == shard_id
    ]


def _detach_records(shards):
    """Empties the shards' records and returns what to restore."""
    saved = [(shard, shard.records) for shard in shards]
    for shard in shards:
        shard.records = OrderedDict()
    return saved


def _restore_records(saved):
    for shard, records in saved:
        shard.records = records


def _seed_children(stream, parents):
    floor = max(_last_sequence_number(p) for p in parents)
    for parent in parents:
        for child in _children(stream, parent.shard_id):
            if not child.records:
                child._rivulet_seq_floor = max(
                    floor, getattr(child, "_rivulet_seq_floor", 0)
                )


# --- Shard: sequence numbers continue after the parents' -------------------------------------

_orig_shard_put_record = Shard.put_record


@wraps(_orig_shard_put_record)
def _shard_put_record(self, partition_key, data, explicit_hash_key):
    floor = getattr(self, "_rivulet_seq_floor", 0)
    if not self.records and floor:
        sequence_number = floor + 1
        self.records[sequence_number] = kinesis_models.Record(
            partition_key, data, sequence_number, explicit_hash_key
        )
        return str(sequence_number)
    return _orig_shard_put_record(self, partition_key, data, explicit_hash_key)


Shard.put_record = _shard_put_record


# --- Stream: resharding keeps records in the parents -----------------------------------------

_orig_split_shard = Stream.split_shard
_orig_merge_shards = Stream.merge_shards


@wraps(_orig_split_shard)
def _split_shard(self, shard_to_split, new_starting_hash_key):
    parent = self.shards[shard_to_split]
    saved = _detach_records([parent])
    try:
        _orig_split_shard(self, shard_to_split, new_starting_hash_key)
    finally:
        _restore_records(saved)
    _seed_children(self, [parent])


@wraps(_orig_merge_shards)
def _merge_shards(self, shard_to_merge, adjacent_shard_to_merge):
    parents = [self.shards[shard_to_merge], self.shards[adjacent_shard_to_merge]]
    for shard in parents:
        if not shard.is_open:
            raise InvalidArgumentError(
                message=f"Shard {shard.shard_id} in stream {self.stream_name} under account "
                f"{self.account_id} has already been merged or split, and thus is not "
                "eligible for merging or splitting."
            )
    saved = _detach_records(parents)
    try:
        _orig_merge_shards(self, shard_to_merge, adjacent_shard_to_merge)
    finally:
        _restore_records(saved)
    _seed_children(self, parents)


_orig_get_shard_for_key = Stream.get_shard_for_key


@wraps(_orig_get_shard_for_key)
def _get_shard_for_key(self, partition_key, explicit_hash_key):
    # Let moto validate the key (it raises on bad input), then pick among open shards only.
    _orig_get_shard_for_key(self, partition_key, explicit_hash_key)
    if explicit_hash_key:
        key = int(explicit_hash_key)
    else:
        key = int(
            kinesis_models.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16
        )
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
            return shard
    return None


Stream.split_shard = _split_shard
Stream.merge_shards = _merge_shards
Stream.get_shard_for_key = _get_shard_for_key


# --- GetRecords: a closed shard read to its end reports its children -------------------------

_orig_get_records = KinesisResponse.get_records


@wraps(_orig_get_records)
def _get_records(self):
    result = _orig_get_records(self)
    body = result.result
    next_iterator = body.get("NextShardIterator") if isinstance(body, dict) else None
    if not next_iterator:
        return result
    stream_name, shard_id, last_sequence = decompose_shard_iterator(next_iterator)
    stream = self.kinesis_backend.describe_stream(
        stream_arn=self._get_param("StreamARN"), stream_name=stream_name
    )
    shard = stream.get_shard(shard_id)
    if shard.is_open or int(last_sequence) < shard.get_max_sequence_number():
        return result
    del body["NextShardIterator"]
    body["ChildShards"] = [
        {
            "ShardId": child.shard_id,
            "ParentShards": [p for p in (child.parent, child.adjacent_parent) if p],
            "HashKeyRange": {
                "StartingHashKey": str(child.starting_hash),
                "EndingHashKey": str(child.ending_hash),
            },
        }
        for child in sorted(_children(stream, shard.shard_id), key=lambda s: s._shard_id)
    ]
    return result


KinesisResponse.get_records = _get_records


def main():
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
