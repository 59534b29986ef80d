"""A real Weaviate server: self-provided vectors, checked batch insert, near_vector and BM25, delete."""

from __future__ import annotations

import numpy as np

from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session


def test_weaviate_round_trip(settings: Settings) -> None:
    from weaviate.classes.config import Configure, DataType, Property
    from weaviate.classes.query import Filter, MetadataQuery
    from weaviate.util import generate_uuid5

    name = f"{settings.collection_prefix}_Roundtrip"
    texts = ["refunds within thirty days", "shipping to Norway costs nine euros", "the warranty lasts two years"]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
    with weaviate_session(settings) as client:
        try:
            collection = client.collections.create(
                name,
                vector_config=Configure.Vectors.self_provided(),
                properties=[Property(name="text", data_type=DataType.TEXT), Property(name="n", data_type=DataType.INT)],
            )
            with collection.batch.fixed_size(batch_size=10) as batch:
                for i, (text, vector) in enumerate(zip(texts, vectors)):
                    batch.add_object({"text": text, "n": i}, uuid=generate_uuid5(text), vector=vector.tolist())
            assert collection.batch.failed_objects == []
            assert len(collection) == 3

            near = collection.query.near_vector(vectors[1].tolist(), limit=1, return_metadata=MetadataQuery(distance=True))
            assert near.objects[0].properties["text"] == texts[1]
            assert near.objects[0].metadata.distance < 1e-4

            bm25 = collection.query.bm25("warranty", limit=3)
            assert [o.properties["text"] for o in bm25.objects] == [texts[2]]

            deleted = collection.data.delete_many(where=Filter.by_property("n").less_than(2))
            assert deleted.successful == 2
            assert [o.properties["text"] for o in collection.iterator()] == [texts[2]]
        finally:
            client.collections.delete(name)
        assert not client.collections.exists(name)


def test_a_rejected_object_fails_the_write_loudly(settings: Settings) -> None:
    """A wrong-typed property fails server-side, per object; upsert_chunks must turn that into an error that
    names the object (the batch request itself succeeds, so nothing else would notice)."""
    import pytest
    from weaviate.classes.config import Configure, DataType, Property

    from hybridops.tasks.knowledge.index import ChunkObject, IndexOperationError, upsert_chunks

    name = f"{settings.collection_prefix}_Failures"
    good, bad = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    with weaviate_session(settings) as client:
        try:
            collection = client.collections.create(
                name,
                vector_config=Configure.Vectors.self_provided(),
                properties=[Property(name="n", data_type=DataType.INT)],
            )
            objects = [ChunkObject(uuid=good, properties={"n": 1}, vector=[0.1, 0.2]),
                       ChunkObject(uuid=bad, properties={"n": "not a number"}, vector=[0.1, 0.2])]
            with pytest.raises(IndexOperationError, match=f"1 of 2 objects were rejected by Weaviate \\({bad}: "):
                upsert_chunks(collection, objects)
            assert len(collection) == 1
            assert upsert_chunks(collection, objects[:1] * 3) == 3 and len(collection) == 1  # by id: an upsert
        finally:
            client.collections.delete(name)
