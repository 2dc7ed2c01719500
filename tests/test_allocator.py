"""The CUDA caching-allocator replay (engine/allocator.py) against the C++ rules, worked by hand.

Every expected number below is derived in its comment from c10/cuda/CUDACachingAllocator.cpp
(round_size, get_pool, get_allocation_size, get_free_block, should_split, free_block/try_merge_blocks,
alloc_block, release_available_cached_blocks, release_cached_blocks, map_block/unmap_block,
garbage_collect_cached_blocks) and c10/core/AllocatorConfig.{h,cpp}; none is the module's output
pasted back."""
import json
import subprocess
import sys
import time
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from torchbudget.engine.allocator import (
    AllocatorConfig, allocation_size, replay, round_size, roundup_power2_next_division,
)

MiB = 2**20
E = namedtuple("E", "kind storage_id nbytes")


def a(sid, nbytes):
    return E("alloc", sid, nbytes)


def f(sid):
    return E("free", sid, 0)


# ------------------------------------------------------------------------------------ size rules

def test_round_size_is_512_minimum_and_multiple():
    # round_size: size < kMinBlockSize (512) -> 512; else kMinBlockSize * ceil(size / 512)
    assert round_size(1) == 512
    assert round_size(511) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert round_size(MiB + 1) == MiB + 512


def test_allocation_size_per_pool():
    # get_allocation_size: <= kSmallSize (1 MiB) -> kSmallBuffer (2 MiB); < kMinLargeAlloc (10 MiB) ->
    # kLargeBuffer / large_segment_size (20 MiB); else rounded up to kRoundLarge (2 MiB)
    assert allocation_size(512) == 2 * MiB
    assert allocation_size(MiB) == 2 * MiB
    assert allocation_size(MiB + 512) == 20 * MiB
    assert allocation_size(10 * MiB - 512) == 20 * MiB
    assert allocation_size(10 * MiB) == 10 * MiB
    assert allocation_size(11 * MiB) == 12 * MiB
    assert allocation_size(5 * MiB, AllocatorConfig(large_segment_size_bytes=64 * MiB)) == 64 * MiB


def test_roundup_power2_division_examples():
    # roundup_power2_next_division's own comment: 1200 with 4 divisions lies between 1024 and 2048,
    # the steps are 1024, 1280, 1536, 1792 -> 1280; a power of two stays itself
    assert roundup_power2_next_division(1200, 4) == 1280
    assert roundup_power2_next_division(4096, 4) == 4096
    cfg = AllocatorConfig(roundup_power2_divisions=4)
    # round_size only applies the division when size > kMinBlockSize * divisions (2048): 1200 -> 1536
    assert round_size(1200, cfg) == 1536
    # PyTorch's test_allocator_settings: 21 Mi floats = 84 MiB with 4 divisions: 64 MiB floor, 16 MiB
    # steps 64/80/96 -> 96 MiB
    assert round_size(84 * MiB, cfg) == 96 * MiB
    r = replay([a(1, 84 * MiB)], config=cfg)
    assert r.rounded_peak_bytes == r.allocated_peak_bytes == 96 * MiB


# ------------------------------------------------------------------------------------ pools and segments

def test_each_request_is_rounded_to_512_bytes():
    # 1 B -> 512 and 513 B -> 1024 in the small pool; the first small request cudaMallocs a 2 MiB segment
    # and both are split from it (remainders >= kMinBlockSize)
    r = replay([a(1, 1), a(2, 513)])
    assert r.allocated_peak_bytes == 512 + 1024
    assert r.rounded_peak_bytes == 512 + 1024
    assert r.reserved_peak_bytes == 2 * MiB
    assert r.segments_peak == 1 and r.cuda_malloc_calls == 1


def test_one_mib_is_small_pool_one_mib_plus_one_is_large_pool():
    # 1 MiB <= kSmallSize: small pool, 2 MiB segment, 1 MiB block split off (remainder 1 MiB >= 512)
    small = replay([a(1, MiB)])
    assert small.reserved_peak_bytes == 2 * MiB
    assert small.allocated_peak_bytes == MiB
    # 1 MiB + 1 rounds to 1 MiB + 512 > kSmallSize: large pool, 20 MiB segment, remainder
    # 20 MiB - 1 MiB - 512 > 1 MiB so it is split off
    large = replay([a(1, MiB + 1)])
    assert large.reserved_peak_bytes == 20 * MiB
    assert large.allocated_peak_bytes == MiB + 512
    # the pools never share segments: the small request cannot use the large remainder
    both = replay([a(1, MiB + 1), a(2, MiB)])
    assert both.reserved_peak_bytes == 22 * MiB
    assert both.segments_peak == 2


def test_small_requests_share_a_segment_until_it_is_full():
    # four 512 KiB requests fill one 2 MiB segment: remainders 1.5 MiB, 1 MiB, 512 KiB, then the last
    # takes the final 512 KiB block whole; a fifth needs a second segment
    four = replay([a(i, 512 * 1024) for i in range(4)])
    assert four.reserved_peak_bytes == 2 * MiB
    assert four.segments_peak == 1
    assert four.allocated_peak_bytes == 2 * MiB
    five = replay([a(i, 512 * 1024) for i in range(5)])
    assert five.reserved_peak_bytes == 4 * MiB
    assert five.segments_peak == 2


def test_small_pool_splits_a_remainder_of_exactly_512_bytes():
    # should_split, small pool: remaining >= kMinBlockSize. 1 MiB then 1 MiB - 512 from one 2 MiB
    # segment leaves exactly 512 B, split off as a block; the 512 B request then fits without a new
    # segment. (With '>' the second request would take the whole 1 MiB block and the third would
    # need a second segment: 4 MiB.)
    r = replay([a(1, MiB), a(2, MiB - 512), a(3, 512)])
    assert r.reserved_peak_bytes == 2 * MiB
    assert r.allocated_peak_bytes == 2 * MiB
    assert r.cuda_malloc_calls == 1


def test_five_mib_requests_share_a_20_mib_segment():
    # 5 MiB: large pool, below kMinLargeAlloc -> a 20 MiB segment, split (15 MiB remainder > 1 MiB);
    # the second 5 MiB is the best fit in that 15 MiB remainder, split again (10 MiB left)
    r = replay([a(1, 5 * MiB), a(2, 5 * MiB)])
    assert r.reserved_peak_bytes == 20 * MiB
    assert r.allocated_peak_bytes == 10 * MiB
    assert r.cuda_malloc_calls == 1


def test_large_request_gets_its_own_segment_rounded_to_2_mib():
    # 11 MiB >= kMinLargeAlloc: a segment of 11 MiB rounded up to kRoundLarge = 12 MiB; the 1 MiB left is
    # not > kSmallSize, so the block is not split and the whole 12 MiB counts as allocated
    r = replay([a(1, 11 * MiB)])
    assert r.reserved_peak_bytes == 12 * MiB
    assert r.allocated_peak_bytes == 12 * MiB
    assert r.rounded_peak_bytes == 11 * MiB


def test_large_pool_splits_only_a_remainder_above_one_mib():
    # should_split, large pool: remaining > kSmallSize (strictly). 11 MiB - 512 also gets a 12 MiB
    # segment; 1 MiB + 512 remains > 1 MiB, so it is split off and only 11 MiB - 512 is allocated
    r = replay([a(1, 11 * MiB - 512)])
    assert r.reserved_peak_bytes == 12 * MiB
    assert r.allocated_peak_bytes == 11 * MiB - 512
    # ... and that 1 MiB + 512 remainder serves the next large request that fits it
    r2 = replay([a(1, 11 * MiB - 512), a(2, MiB + 1)])
    assert r2.reserved_peak_bytes == 12 * MiB
    assert r2.allocated_peak_bytes == 12 * MiB


def test_best_fit_takes_the_smallest_adequate_cached_block():
    # three segments of 14, 12 and 16 MiB (requests >= 10 MiB get their own), all freed and cached.
    # 11 MiB -> best fit 12 (not 14); 13 -> 14; 15 -> 16: no new cudaMalloc. Had 11 MiB taken the 14 MiB
    # block, 13 would take 16 and 15 would need a fourth segment.
    events = [a(1, 14 * MiB), a(2, 12 * MiB), a(3, 16 * MiB), f(1), f(2), f(3),
              a(4, 11 * MiB), a(5, 13 * MiB), a(6, 15 * MiB)]
    r = replay(events)
    assert r.cuda_malloc_calls == 3
    assert r.reserved_peak_bytes == 42 * MiB
    # each takes its block whole (remainders of 1 MiB are not split): 12 + 14 + 16
    assert r.final_allocated_bytes == 42 * MiB


def test_freed_neighbours_merge_so_a_larger_request_fits():
    # 4 x 5 MiB fill one 20 MiB segment (the last takes the final 5 MiB whole). Freeing the 2nd and 3rd
    # merges them into one 10 MiB cached block, which then serves a 10 MiB request: no new segment.
    events = [a(i, 5 * MiB) for i in range(4)] + [f(1), f(2), a(9, 10 * MiB)]
    r = replay(events)
    assert r.cuda_malloc_calls == 1
    assert r.reserved_peak_bytes == 20 * MiB
    assert r.final_allocated_bytes == 20 * MiB
    # a block merges with both neighbours: free 1st and 3rd, then 2nd -> 15 MiB serves 15 MiB
    events = [a(i, 5 * MiB) for i in range(4)] + [f(0), f(2), f(1), a(9, 15 * MiB)]
    r = replay(events)
    assert r.cuda_malloc_calls == 1
    assert r.final_allocated_bytes == 20 * MiB
    # without the merge the 10 MiB request needs its own 10 MiB segment: free 1st and 3rd (not adjacent)
    events = [a(i, 5 * MiB) for i in range(4)] + [f(0), f(2), a(9, 10 * MiB)]
    r = replay(events)
    assert r.cuda_malloc_calls == 2
    assert r.reserved_peak_bytes == 30 * MiB


def test_zero_byte_allocation_and_unknown_free_do_nothing():
    # NativeCachingAllocator::allocate skips malloc for size 0; a free of an unknown id is ignored
    r = replay([a(1, 0), f(1), f(42), f(1)])
    assert r.reserved_peak_bytes == 0 and r.allocated_peak_bytes == 0
    assert r.cuda_malloc_calls == 0


# ------------------------------------------------------------------------------------ max_split_size

MAX_SPLIT_64 = AllocatorConfig(max_split_size_bytes=64 * MiB)


def test_oversize_block_serves_a_large_request_whole_without_splitting():
    # get_free_block with max_split_size 64 MiB: the cached 100 MiB block (>= max_split) may serve a
    # 90 MiB request (>= max_split) since 100 < 90 + max_non_split_rounding (20 MiB); should_split is
    # false for size >= max_split, so the whole 100 MiB is allocated
    r = replay([a(1, 100 * MiB), f(1), a(2, 90 * MiB)], config=MAX_SPLIT_64)
    assert r.cuda_malloc_calls == 1
    assert r.reserved_peak_bytes == 100 * MiB
    assert r.final_allocated_bytes == 100 * MiB


def test_oversize_block_rounding_limit_is_exclusive():
    # refused when block size >= request + 20 MiB: 100 >= 80 + 20 -> new 80 MiB segment (180 reserved);
    # 80 MiB + 512: 100 < 100 MiB + 512 -> served by the cached block
    refused = replay([a(1, 100 * MiB), f(1), a(2, 80 * MiB)], config=MAX_SPLIT_64)
    assert refused.reserved_peak_bytes == 180 * MiB
    served = replay([a(1, 100 * MiB), f(1), a(2, 80 * MiB + 512)], config=MAX_SPLIT_64)
    assert served.reserved_peak_bytes == 100 * MiB
    # max_non_split_rounding_mb:40 widens it: 100 < 70 + 40
    wide = AllocatorConfig(max_split_size_bytes=64 * MiB, max_non_split_rounding_bytes=40 * MiB)
    assert replay([a(1, 100 * MiB), f(1), a(2, 70 * MiB)], config=wide).reserved_peak_bytes == 100 * MiB


def test_oversize_block_never_serves_a_request_below_max_split():
    # 30 MiB < max_split (64): the cached 100 MiB block (>= max_split) is refused -> a 30 MiB segment
    r = replay([a(1, 100 * MiB), f(1), a(2, 30 * MiB)], config=MAX_SPLIT_64)
    assert r.reserved_peak_bytes == 130 * MiB
    # default (no max_split_size): the 100 MiB block is split, 70 MiB goes back to the cache
    r = replay([a(1, 100 * MiB), f(1), a(2, 30 * MiB)])
    assert r.reserved_peak_bytes == 100 * MiB
    assert r.final_allocated_bytes == 30 * MiB


# ------------------------------------------------------------------------------------ out of memory

def test_cache_is_released_and_retried_before_oom():
    # capacity 40 MiB: a freed 30 MiB segment is cached; 32 MiB does not fit in it, and cudaMalloc(32)
    # would make 62 > 40. release_available_cached_blocks does nothing without max_split_size, so
    # release_cached_blocks frees the 30 MiB segment and the retry (alloc_block isRetry) succeeds.
    r = replay([a(1, 30 * MiB), f(1), a(2, 32 * MiB)], capacity_bytes=40 * MiB)
    assert not r.oom and r.oom_at_event is None
    assert r.alloc_retries == 1 and r.cuda_free_calls == 1 and r.cuda_malloc_calls == 2
    assert r.reserved_peak_bytes == 32 * MiB          # 30, then 0, then 32
    assert r.reserved_timeline.tolist() == [30 * MiB, 30 * MiB, 32 * MiB]
    # unlimited capacity keeps the cache: 62 MiB reserved
    assert replay([a(1, 30 * MiB), f(1), a(2, 32 * MiB)]).reserved_peak_bytes == 62 * MiB


def test_release_available_cached_blocks_frees_one_oversize_block_first():
    # max_split 64 MiB, capacity 150 MiB: the cached 100 MiB block cannot serve 80 MiB (100 >= 80 + 20)
    # and cudaMalloc(80) would make 180 > 150. release_available_cached_blocks: lower_bound of
    # max(80, 64) finds the 100 MiB block and releases it; the next alloc_block (not a retry) succeeds
    r = replay([a(1, 100 * MiB), f(1), a(2, 80 * MiB)], capacity_bytes=150 * MiB, config=MAX_SPLIT_64)
    assert not r.oom
    assert r.alloc_retries == 0 and r.cuda_free_calls == 1
    assert r.reserved_peak_bytes == 100 * MiB
    assert r.final_reserved_bytes == 80 * MiB


def test_release_available_cached_blocks_frees_several_from_the_largest_down():
    # cached oversize blocks 70, 66 and 64 MiB (max_split 64), capacity 230: a 130 MiB request fits none
    # and cudaMalloc would make 330. No single block >= 130, so blocks are released from the largest
    # down until >= 130 MiB: 70 + 66 = 136; the 64 MiB one stays cached (reserved 64 + 130 = 194).
    events = [a(1, 70 * MiB), a(2, 66 * MiB), a(3, 64 * MiB), f(1), f(2), f(3), a(4, 130 * MiB)]
    r = replay(events, capacity_bytes=230 * MiB, config=MAX_SPLIT_64)
    assert not r.oom
    assert r.cuda_free_calls == 2 and r.alloc_retries == 0
    assert r.final_reserved_bytes == 194 * MiB


def test_true_oom_when_nothing_can_be_released():
    # 30 MiB live, capacity 40: 12 MiB needs a 12 MiB segment (42 > 40), nothing is cached -> OOM at
    # event 1, after the retry; the replay stops there
    r = replay([a(1, 30 * MiB), a(2, 12 * MiB), f(1)], capacity_bytes=40 * MiB)
    assert r.oom and r.oom_at_event == 1
    assert r.alloc_retries == 1
    assert r.allocated_peak_bytes == 30 * MiB
    assert r.allocated_timeline.tolist() == [30 * MiB] * 3   # frozen at the OOM
    # 42 MiB is exactly enough
    assert not replay([a(1, 30 * MiB), a(2, 12 * MiB)], capacity_bytes=42 * MiB).oom


def test_a_partly_used_segment_cannot_be_released():
    # two 5 MiB blocks share a 20 MiB segment; freeing one leaves the segment split, so
    # release_cached_blocks cannot cudaFree it: 25 MiB (segment 26) on a 40 MiB device is an OOM
    r = replay([a(1, 5 * MiB), a(2, 5 * MiB), f(1), a(3, 25 * MiB)], capacity_bytes=40 * MiB)
    assert r.oom and r.oom_at_event == 3
    assert r.cuda_free_calls == 0


# ------------------------------------------------------------------------------------ expandable segments

EXPANDABLE = AllocatorConfig(expandable_segments=True)


def test_expandable_segment_grows_in_pages():
    # small pool pages are kSmallBuffer (2 MiB): 100 B maps one page
    assert replay([a(1, 100)], config=EXPANDABLE).reserved_peak_bytes == 2 * MiB
    # large pool pages are large_segment_size (20 MiB): 30 MiB maps 2 pages
    r = replay([a(1, 30 * MiB)], config=EXPANDABLE)
    assert r.reserved_peak_bytes == 40 * MiB
    assert r.allocated_peak_bytes == 30 * MiB   # should_split with expandable: any remainder >= 512
    assert r.segments_peak == 1


def test_expandable_segment_reuses_freed_space_that_separate_segments_cannot():
    # without: 12 MiB gets a 12 MiB segment; freed, it cannot hold 14 MiB -> a 14 MiB segment: 26 MiB.
    # with: 12 MiB maps one 20 MiB page (8 MiB split off); freed, the block merges back to 20 MiB and
    # holds the 14 MiB request: 20 MiB.
    events = [a(1, 12 * MiB), f(1), a(2, 14 * MiB)]
    assert replay(events).reserved_peak_bytes == 26 * MiB
    assert replay(events, config=EXPANDABLE).reserved_peak_bytes == 20 * MiB


def test_expandable_segments_keep_reserved_near_allocated_when_sizes_grow():
    # batch N then N+1: ten 30 MiB tensors freed, then ten 31 MiB tensors.
    # Separate segments: 10 x 30 cached, none fits 31 -> 10 x 32 more: 300 + 320 = 620 MiB reserved.
    # Expandable: the 30 MiB tensors tile 300 MiB = 15 pages exactly; freed they merge into one 300 MiB
    # block; nine 31 MiB tensors take 279 of it, the tenth needs 31 - 21 = 10 more -> one more page: 320.
    events = [a(i, 30 * MiB) for i in range(10)] + [f(i) for i in range(10)]
    events += [a(100 + i, 31 * MiB) for i in range(10)]
    assert replay(events).reserved_peak_bytes == 620 * MiB
    r = replay(events, config=EXPANDABLE)
    assert r.reserved_peak_bytes == 320 * MiB
    assert r.allocated_peak_bytes == 310 * MiB


def test_expandable_pages_are_unmapped_before_an_oom():
    # 4 x 1 MiB in the small pool map 2 pages (4 MiB); all freed they stay mapped (cached). A 20 MiB
    # request on a 22 MiB device: mapping one 20 MiB page would make 24 > 22, so release_cached_blocks
    # unmaps the small segment's free pages (and drops that segment), and the retry maps the page.
    events = [a(i, MiB) for i in range(4)] + [f(i) for i in range(4)] + [a(9, 20 * MiB)]
    r = replay(events, config=EXPANDABLE, capacity_bytes=22 * MiB)
    assert not r.oom
    assert r.alloc_retries == 1 and r.cuda_free_calls == 1
    assert r.final_reserved_bytes == 20 * MiB
    assert r.reserved_peak_bytes == 20 * MiB
    # 19 MiB of capacity is not enough even then
    assert replay(events, config=EXPANDABLE, capacity_bytes=19 * MiB).oom


def test_expandable_best_fit_prefers_a_block_that_cannot_grow():
    # get_free_block with expandable segments: the cached block at the end of the mapped range counts as
    # its size plus the unmapped space after it, so a larger ordinary block is preferred to it.
    # X 10 MiB maps one 20 MiB page (10 split off), Y 10 takes that; Z 15 maps a second page (5 left at
    # the end). Free X: cached X 10 (followed by Y) and the 5 MiB tail. A 4 MiB request skips the tail for
    # X (6 left), 6 MiB then takes X's rest, 5 MiB the tail: 40 MiB reserved. Taking the tail for 4 MiB
    # would leave 1 MiB there and X's 4 MiB after the 6 MiB request, so 5 MiB would map a third page (60).
    # Live at the end: Y 10 + Z 15 + 4 + 6 + 5 = 40 MiB, the two pages exactly.
    events = [a(1, 10 * MiB), a(2, 10 * MiB), a(3, 15 * MiB), f(1), a(4, 4 * MiB), a(5, 6 * MiB), a(6, 5 * MiB)]
    r = replay(events, config=EXPANDABLE)
    assert r.reserved_peak_bytes == 40 * MiB
    assert r.final_allocated_bytes == 40 * MiB


# ------------------------------------------------------------------------------------ garbage collection

def test_garbage_collection_frees_old_cached_segments_above_the_threshold():
    # per_process_memory_fraction 0.5 of 100 MiB: allowed 50 MiB; threshold 0.5 -> collect above 25 MiB.
    # 12 MiB (A) and 14 MiB (B) segments, both freed: reserved 26. The 16 MiB request fits neither and
    # triggers garbage_collect_cached_blocks: get_free_block calls so far 3 (one per allocation), A was
    # cached after call 1 (age 2), B after call 2 (age 1), average 1.5 -> A (age 2 >= 1.5) is freed, which
    # covers the 1 MiB target; then cudaMalloc(16): reserved 14 + 16 = 30.
    events = [a(1, 12 * MiB), f(1), a(2, 14 * MiB), f(2), a(3, 16 * MiB)]
    gc = AllocatorConfig(per_process_memory_fraction=0.5, garbage_collection_threshold=0.5)
    r = replay(events, capacity_bytes=100 * MiB, config=gc)
    assert r.cuda_free_calls == 1
    assert r.reserved_peak_bytes == 30 * MiB
    assert r.final_reserved_bytes == 30 * MiB
    # without the threshold (or without a fraction: no allowed maximum, no GC) nothing is collected: 42
    no_gc = AllocatorConfig(per_process_memory_fraction=0.5)
    assert replay(events, capacity_bytes=100 * MiB, config=no_gc).reserved_peak_bytes == 42 * MiB
    only_threshold = AllocatorConfig(garbage_collection_threshold=0.5)
    assert replay(events, capacity_bytes=100 * MiB, config=only_threshold).reserved_peak_bytes == 42 * MiB


def test_garbage_collection_frees_blocks_exactly_at_the_average_age():
    # the age test is >=: A (12) and B (14) freed one after the other are both cached after call 2; the
    # 16 MiB request (call 3) finds reserved 26 > 25, ages 1 and 1, average 1 -> both are freed (the pass
    # does not stop at the target), then cudaMalloc(16): reserved 16. With '>' nothing would go: 42.
    events = [a(1, 12 * MiB), a(2, 14 * MiB), f(1), f(2), a(3, 16 * MiB)]
    gc = AllocatorConfig(per_process_memory_fraction=0.5, garbage_collection_threshold=0.5)
    r = replay(events, capacity_bytes=100 * MiB, config=gc)
    assert r.cuda_free_calls == 2
    assert r.final_reserved_bytes == 16 * MiB
    assert r.reserved_peak_bytes == 26 * MiB


def test_per_process_memory_fraction_caps_new_segments():
    # allowed = 0.5 x 100 MiB = 50: 30 MiB live, then 22 MiB would make 52 > 50 -> OOM (nothing cached)
    cfg = AllocatorConfig(per_process_memory_fraction=0.5)
    assert replay([a(1, 30 * MiB), a(2, 22 * MiB)], capacity_bytes=100 * MiB, config=cfg).oom
    assert not replay([a(1, 30 * MiB), a(2, 20 * MiB)], capacity_bytes=100 * MiB, config=cfg).oom


# ------------------------------------------------------------------------------------ replay options

def test_sizes_replace_event_bytes_and_frees_ignore_theirs():
    events = [a(1, 1), a(2, 1), f(1)]
    # sizes as another batch size would give them: 5 MiB twice share one 20 MiB segment
    r = replay(events, sizes=np.array([5 * MiB, 5 * MiB, 123]))
    assert r.allocated_peak_bytes == 10 * MiB
    assert r.final_allocated_bytes == 5 * MiB
    assert r.reserved_peak_bytes == 20 * MiB
    with pytest.raises(ValueError):
        replay(events, sizes=[1, 2])


def test_measure_from_resets_peaks_after_a_prefix():
    # prefix: weights 12 MiB and a 30 MiB temporary, freed (cached); both are segments of their own.
    # The step's 20 MiB is served by the cached 30 MiB block (10 MiB split back): no cudaMalloc in the
    # step, and its peaks start from the state at the reset (reserved 42, allocated 12).
    events = [a(1, 12 * MiB), a(2, 30 * MiB), f(2), a(3, 20 * MiB), f(3)]
    r = replay(events, measure_from=3)
    assert r.cuda_malloc_calls == 0
    assert r.reserved_peak_bytes == 42 * MiB          # the state at the reset is the floor
    assert r.allocated_peak_bytes == 12 * MiB + 20 * MiB
    full = replay(events)
    assert full.allocated_peak_bytes == 42 * MiB and full.cuda_malloc_calls == 2


# ------------------------------------------------------------------------------------ config parsing

def test_from_env_string_examples():
    cfg = AllocatorConfig.from_env_string("expandable_segments:True,max_split_size_mb:128")
    assert cfg.expandable_segments and cfg.max_split_size_bytes == 128 * MiB
    assert cfg.non_split_rounding_bytes == 20 * MiB
    # whitespace dropped, trailing comma allowed, later keys win (ConfigTokenizer + parseArgs loop)
    cfg = AllocatorConfig.from_env_string(" max_split_size_mb : 200 , expandable_segments:True,"
                                          "expandable_segments:False,")
    assert cfg.max_split_size_bytes == 200 * MiB and not cfg.expandable_segments
    assert AllocatorConfig.from_env_string("") == AllocatorConfig()
    # large_segment_size_mb also lifts the default max_non_split_rounding (torch 2.14.1)
    cfg = AllocatorConfig.from_env_string("large_segment_size_mb:64")
    assert cfg.large_segment_size_bytes == 64 * MiB and cfg.non_split_rounding_bytes == 64 * MiB
    cfg = AllocatorConfig.from_env_string("garbage_collection_threshold:0.6,per_process_memory_fraction:0.9")
    assert cfg.garbage_collection_threshold == 0.6 and cfg.per_process_memory_fraction == 0.9
    cfg = AllocatorConfig.from_env_string("pinned_use_background_threads:True,release_lock_on_cudamalloc:True,"
                                          "backend:native")
    assert cfg.ignored_keys == ("pinned_use_background_threads", "release_lock_on_cudamalloc")
    assert cfg.expandable_segments is False


def test_roundup_power2_divisions_list_form():
    # parseRoundUpPower2Divisions: 256 MiB -> interval 8 (the first value also fills 0..7), 512 -> 9,
    # 1024 -> 10, '>' fills the intervals after the last one given (11..15)
    cfg = AllocatorConfig.from_env_string("roundup_power2_divisions:[256:1,512:2,1024:4,>:8]")
    assert cfg.roundup_power2_divisions == (1,) * 9 + (2, 4) + (8,) * 5
    assert cfg.divisions_for(300 * MiB) == 1      # 2**28 <= 300 MiB < 2**29: interval 8
    assert cfg.divisions_for(600 * MiB) == 2
    assert cfg.divisions_for(100 * 2**30) == 8    # past 32 GiB: the last interval
    assert AllocatorConfig.from_env_string("roundup_power2_divisions:4").roundup_power2_divisions == (4,) * 16


@pytest.mark.parametrize("env, names", [
    ("foo:1", "foo"),
    ("max_split_size_mb:10", "max_split_size_mb"),              # < 20 MiB (large_segment_size)
    ("max_split_size_mb:30,large_segment_size_mb:64", "max_split_size_mb"),   # whatever the order
    ("max_non_split_rounding_mb:5", "max_non_split_rounding_mb"),
    ("large_segment_size_mb:10", "large_segment_size_mb"),       # must be > 10
    ("expandable_segments:true", "expandable_segments"),         # case-sensitive True/False
    ("garbage_collection_threshold:1.5", "garbage_collection_threshold"),
    ("garbage_collection_threshold:abc", "garbage_collection_threshold"),
    ("per_process_memory_fraction:1.5", "per_process_memory_fraction"),
    ("roundup_power2_divisions:3", "roundup_power2_divisions"),
    ("roundup_power2_divisions:[65:8]", "roundup_power2_divisions"),
    ("roundup_power2_divisions:[64:8", "roundup_power2_divisions"),
    ("max_split_size_mb", "max_split_size_mb"),
    ("max_split_size_mb:abc", "max_split_size_mb"),
    ("max_split_size_mb:-5", "max_split_size_mb"),               # torch's stoull wraps this; refused here
    ("max_split_size_mb:128;expandable_segments:True", "max_split_size_mb"),
    ("backend:cudaMallocAsync", "cudaMallocAsync"),
    ("MAX_SPLIT_SIZE_MB:128", "MAX_SPLIT_SIZE_MB"),
    ("pinned_num_register_threads:3", "pinned_num_register_threads"),
])
def test_from_env_string_errors_are_one_line_value_errors(env, names):
    with pytest.raises(ValueError) as err:
        AllocatorConfig.from_env_string(env)
    message = str(err.value)
    assert "\n" not in message and names in message


# torch 2.14.1's own parser (c10 AcceleratorAllocatorConfig + CUDAAllocatorConfig) decides these the same way
AGREE = ["", "expandable_segments:True,max_split_size_mb:128", "max_split_size_mb:20", "max_split_size_mb:19",
         "max_non_split_rounding_mb:20", "large_segment_size_mb:11", "large_segment_size_mb:10",
         "large_segment_size_mb:64,max_split_size_mb:30", "max_split_size_mb:30,large_segment_size_mb:64",
         "max_split_size_mb:128,", " max_split_size_mb : 128 ", ",", "foo:1", "expandable_segments:true",
         "expandable_segments:False", "garbage_collection_threshold:0.6", "garbage_collection_threshold:0",
         "garbage_collection_threshold:1.5", "roundup_power2_divisions:4", "roundup_power2_divisions:3",
         "roundup_power2_divisions:0", "roundup_power2_divisions:1", "roundup_power2_divisions:[]",
         "roundup_power2_divisions:[64:8,256:4,>:1]", "roundup_power2_divisions:[65:8]",
         "roundup_power2_divisions:[64:3]", "roundup_power2_divisions:[>:2]",
         "per_process_memory_fraction:0.5", "per_process_memory_fraction:1.5", "backend:native",
         "release_lock_on_cudamalloc:True", "release_lock_on_cudamalloc:yes", "pinned_num_register_threads:8",
         "pinned_num_register_threads:3", "pinned_num_register_threads:256", "throw_on_cudamalloc_oom:True",
         "graph_capture_record_stream_reuse:True", "pinned_reserve_segment_size_mb:64",
         "pinned_free_catch_all:True", "pinned_use_background_threads:True", "pinned_max_round_threshold_mb:4",
         "pinned_max_cached_size_mb:4", "expandable_segments_handle_type:posix_fd", "MAX_SPLIT_SIZE_MB:128",
         "release_lock_on_hipmalloc:True", "pinned_use_hip_host_register:True", "max_split_size_mb",
         "max_split_size_mb:[1,2]", "expandable_segments:[True]"]

_ORACLE = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
setting = torch._C._accelerator_setAllocatorSettings
out = {}
for env in json.loads(sys.argv[1]):
    setting("large_segment_size_mb:20")   # the only setting a parse does not reset
    try:
        setting(env)
        out[env] = True
    except Exception:
        out[env] = False
print(json.dumps(out))
"""


def test_accepts_and_refuses_what_torch_does():
    torch = pytest.importorskip("torch")
    if not torch.__version__.startswith("2.14.") or not hasattr(torch._C, "_accelerator_setAllocatorSettings"):
        pytest.skip(f"the parser mirrors torch 2.14's; this is torch {torch.__version__}")
    proc = subprocess.run([sys.executable, "-c", _ORACLE, json.dumps(AGREE)], capture_output=True, text=True,
                          timeout=300)
    torch_says = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = {}
    for env in AGREE:
        try:
            AllocatorConfig.from_env_string(env)
            ours[env] = True
        except ValueError:
            ours[env] = False
    assert ours == torch_says


# ------------------------------------------------------------------------------------ properties

_sizes = st.one_of(st.integers(0, MiB), st.integers(MiB, 10 * MiB), st.integers(10 * MiB, 120 * MiB))


@st.composite
def _programs(draw):
    """Random alloc/free programs: each step allocates a new id or frees a live (or unknown) one."""
    events, live, next_id = [], [], 0
    for _ in range(draw(st.integers(1, 80))):
        if live and draw(st.booleans()):
            sid = live.pop(draw(st.integers(0, len(live) - 1)))
            events.append(f(sid))
        elif draw(st.integers(0, 20)) == 0:
            events.append(f(10_000 + next_id))
            next_id += 1
        else:
            events.append(a(next_id, draw(_sizes)))
            live.append(next_id)
            next_id += 1
    return events


_configs = st.sampled_from([AllocatorConfig(), EXPANDABLE, MAX_SPLIT_64,
                            AllocatorConfig(expandable_segments=True, max_split_size_bytes=64 * MiB),
                            AllocatorConfig(roundup_power2_divisions=4)])


# the device size fixes the expandable segments' address space; capacity then only decides failures
TOTAL = 1 << 40


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_programs(), config=_configs)
def test_replay_invariants(events, config):
    r = replay(events, config=config, device_total_bytes=TOTAL)
    assert not r.oom
    assert 0 <= r.rounded_peak_bytes <= r.allocated_peak_bytes <= r.reserved_peak_bytes
    assert r.reserved_peak_bytes % (2 * MiB) == 0             # segments and pages are 2 MiB multiples
    assert r.final_allocated_bytes <= r.final_reserved_bytes
    assert int(r.allocated_timeline.max(initial=0)) == r.allocated_peak_bytes
    assert int(r.reserved_timeline.max(initial=0)) <= r.reserved_peak_bytes
    assert np.all(r.allocated_timeline <= r.reserved_timeline)
    # the same device with exactly the peak it needed never runs out, and does the same thing
    again = replay(events, config=config, capacity_bytes=r.reserved_peak_bytes, device_total_bytes=TOTAL)
    assert not again.oom
    assert again == r
    # one byte less: either the cache had to be released somewhere, or it is an OOM
    if r.reserved_peak_bytes:
        tight = replay(events, config=config, capacity_bytes=r.reserved_peak_bytes - 1, device_total_bytes=TOTAL)
        assert tight.oom or tight.cuda_free_calls > 0


@settings(max_examples=100, deadline=None)
@given(events=_programs(), cut=st.integers(0, 80))
def test_measure_from_only_changes_the_measurement(events, cut):
    cut = min(cut, len(events))
    full = replay(events)
    later = replay(events, measure_from=cut)
    assert later.final_reserved_bytes == full.final_reserved_bytes
    assert later.final_allocated_bytes == full.final_allocated_bytes
    assert later.allocated_peak_bytes <= full.allocated_peak_bytes
    assert later.reserved_peak_bytes <= full.reserved_peak_bytes
    np.testing.assert_array_equal(later.reserved_timeline, full.reserved_timeline)


# ------------------------------------------------------------------------------------ a real trace

def test_resnet18_training_trace():
    from torchbudget.engine.api import analyze
    from torchbudget.engine.memory import simulate_memory
    from torchbudget.engine.overheads import Overheads

    result = analyze("resnet18", "8x3x224x224", mode="train")
    events = result.storage_events
    replay(events)   # builds the per-trace arrays once, as the planner's repeated replays would find them
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        r = replay(events)
        best = min(best, time.perf_counter() - start)
    print(f"\nresnet18 8x3x224x224 train: {len(events)} events replayed in {best * 1e3:.2f} ms "
          f"({best * 1e3 / len(events) * 1e4:.1f} ms per 10k events); allocated {r.allocated_peak_bytes / MiB:.1f} "
          f"MiB, reserved {r.reserved_peak_bytes / MiB:.1f} MiB, {r.segments_peak} segments")
    profile = simulate_memory(result, Overheads(cuda_context_bytes=0,
                                                cublas_workspace_bytes=0, cudnn_workspace_bytes=0))
    # the 512-rounded live peak is memory.py's iteration-1 peak exactly
    assert r.rounded_peak_bytes == profile.iteration1_peak_bytes
    # blocks are at least their rounded request (unsplit remainders add to them); segments hold blocks
    assert r.allocated_peak_bytes >= r.rounded_peak_bytes
    assert r.reserved_peak_bytes >= r.allocated_peak_bytes
    assert not r.oom
    assert best < 1.0   # a generous bound: a regression to quadratic work would blow it
