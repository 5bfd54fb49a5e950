"""Position tables: the cached spatial resize serves the same values and never stale ones."""

import torch

from evad.layers.pos_embed import ResizedTables, resize_spatial, sinusoid_table


def test_cached_resize_equals_the_resize_and_is_computed_once():
    table = sinusoid_table(2 * 4 * 4, 8)
    cache = ResizedTables()
    first = cache.get(table, (2, 4, 4), (6, 5))
    torch.testing.assert_close(first, resize_spatial(table, (2, 4, 4), (6, 5)), rtol=0, atol=0)
    assert first.shape == (2 * 6 * 5, 8)
    assert cache.get(table, (2, 4, 4), (6, 5)) is first
    assert cache.get(table, (2, 4, 4), (4, 4)).data_ptr() == table.data_ptr()  # the table's own size


def test_an_in_place_change_of_the_table_is_not_served_stale():
    table = sinusoid_table(1 * 3 * 3, 4)
    cache = ResizedTables()
    before = cache.get(table, (1, 3, 3), (5, 5))
    table.mul_(2)
    after = cache.get(table, (1, 3, 3), (5, 5))
    torch.testing.assert_close(after, 2 * before)


def test_a_table_cached_under_inference_mode_serves_training():
    table = sinusoid_table(1 * 3 * 3, 4)
    cache = ResizedTables()
    with torch.inference_mode():
        cache.get(table, (1, 3, 3), (4, 4))  # e.g. an evaluation before the next training step
    x = torch.randn(16, 4, requires_grad=True)
    (x * cache.get(table, (1, 3, 3), (4, 4))).sum().backward()  # saved for backward: must not fail
    torch.testing.assert_close(x.grad, resize_spatial(table, (1, 3, 3), (4, 4)))


def test_the_cache_keeps_only_the_most_recently_used_sizes():
    table = sinusoid_table(1 * 3 * 3, 4)
    cache = ResizedTables(max_entries=2)
    first = cache.get(table, (1, 3, 3), (4, 4))
    second = cache.get(table, (1, 3, 3), (5, 5))
    assert cache.get(table, (1, 3, 3), (4, 4)) is first  # now the most recent
    cache.get(table, (1, 3, 3), (6, 6))  # evicts (5, 5), the least recently used
    assert cache.get(table, (1, 3, 3), (4, 4)) is first
    again = cache.get(table, (1, 3, 3), (5, 5))
    assert again is not second
    torch.testing.assert_close(again, second, rtol=0, atol=0)
