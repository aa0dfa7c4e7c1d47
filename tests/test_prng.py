"""PCG32 against pcg32-demo's published output (pcg-c-basic, seed 42, sequence 54, round 1)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.prng import Pcg32

# pcg32-demo, "Round 1" (pcg-random.org, "Using the Basic C Implementation"): the 32-bit values,
# then 65 coins (bounded(2), 1 = H), 33 dice (bounded(6) + 1) and a 52-card deal, all drawn in
# that order from one generator.
ROUND1_U32 = [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E]
ROUND1_COINS = "HHTTTHTHHHTHTTTHHHHHTTTHHHTHTHTHTTHTTTHHHHHHTTTTHHTTTTTHTTTTTTTHT"
ROUND1_ROLLS = [3, 4, 1, 1, 2, 2, 3, 2, 4, 3, 2, 4, 3, 3, 5, 2, 3, 1, 3, 1, 5, 1, 4, 1, 5, 6, 4, 6, 6, 2, 6, 3, 3]
ROUND1_CARDS = ("Qd Ks 6d 3s 3d 4c 3h Td Kc 5c Jh Kd Jd As 4s 4h Ad Th Ac Jc 7s Qs "
                "2s 7h Kh 2d 6c Ah 4d Qh 9h 6s 5s 2c 9c Ts 8d 9s 3c 8c Js 5d 2h 6h "
                "7d 8s 9d 5h 8h Qc 7c Tc").split()


def test_pcg32_demo_round1():
    rng = Pcg32(42, 54)
    assert [rng.next_u32() for _ in range(6)] == ROUND1_U32
    assert "".join("H" if rng.bounded(2) else "T" for _ in range(65)) == ROUND1_COINS
    assert [rng.bounded(6) + 1 for _ in range(33)] == ROUND1_ROLLS
    # pcg32-demo deals with the same Fisher-Yates as Pcg32.shuffle.
    cards = rng.shuffle(np.arange(52))
    assert ["A23456789TJQK"[c // 4] + "hcds"[c % 4] for c in cards] == ROUND1_CARDS


def test_state_round_trip_continues_the_stream():
    a = Pcg32(7, 3)
    a.permutation(10)
    saved = a.get_state()
    expected = [a.next_u32() for _ in range(5)]
    b = Pcg32(0)
    b.set_state(saved)
    assert [b.next_u32() for _ in range(5)] == expected


def test_streams_differ():
    assert Pcg32(5, 1).next_u32() != Pcg32(5, 2).next_u32()


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 200), st.data())
def test_choice_is_the_prefix_of_the_reversed_shuffle(seed, n, data):
    k = data.draw(st.integers(0, n))
    picked = Pcg32(seed).choice(n, k)
    perm = Pcg32(seed).permutation(n)
    assert np.array_equal(picked, perm[::-1][:k])
    assert sorted(perm.tolist()) == list(range(n))
    assert len(set(picked.tolist())) == k


def test_bounded_is_unbiased_for_a_bound_near_2_32():
    # With n = 3 * 2**30 plain r % n would give 0..2**30-1 twice the weight of the rest.
    rng = Pcg32(1)
    draws = np.array([rng.bounded(3 << 30) for _ in range(30000)])
    low = (draws < (1 << 30)).mean()
    assert abs(low - 1 / 3) < 0.02


def test_random_floats_are_24_bit_in_unit_interval():
    rng = Pcg32(9)
    xs = [rng.random() for _ in range(1000)]
    assert all(0 <= x < 1 and (x * 2**24).is_integer() for x in xs)


@pytest.mark.parametrize("bad", [{"state": 1, "inc": 2}, {"state": -1, "inc": 1}, {"state": 1}, [1, 1], None])
def test_bad_states_are_refused(bad):
    with pytest.raises(TinyclError, match="invalid PCG32 state"):
        Pcg32(0).set_state(bad)
