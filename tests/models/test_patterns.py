"""models.patterns: the one rule by which crystal decodes and motif decodes pick known examples as starts."""

from __future__ import annotations

import numpy as np

from models.patterns import SAME_LATENT, PatternIndex, count_pattern, renamed


def test_patterns_order_elements_by_count_then_atomic_number():
    srtio3_cell = np.array([38, 38, 22, 22, 8, 8, 8, 8, 8, 8])  # two formula units of SrTiO3
    elements, counts = count_pattern(srtio3_cell)
    assert elements.tolist() == [8, 22, 38] and counts == (6, 2, 2)
    assert count_pattern(srtio3_cell, reduced=True)[1] == (3, 1, 1)
    assert count_pattern(np.array([8, 8, 0, 0]))[1] == (2,)  # padding is not an element
    assert count_pattern(np.zeros(3, dtype=int), reduced=True)[1] == ()


def test_renaming_maps_the_most_numerous_element_to_the_most_numerous():
    batio3_elements = count_pattern(np.array([56, 22, 8, 8, 8]))[0]  # O, Ti, Ba
    srtio3 = np.array([38, 22, 8, 8, 8, 0])
    assert renamed(srtio3, batio3_elements).tolist() == [56, 22, 8, 8, 8, 0]
    nacl_as_kbr = renamed(np.array([11, 17, 11, 17]), count_pattern(np.array([19, 35]))[0])
    assert sorted(nacl_as_kbr.tolist()) == [19, 19, 35, 35]


def test_the_nearest_rows_share_the_pattern_and_never_sit_on_z():
    latents = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [3.0, 0.0]], dtype=np.float32)
    index = PatternIndex(latents=latents, patterns=[(1, 1), (1, 1), (2, 1), (1, 1)])
    assert index.nearest(np.array([0.9, 0.0]), (1, 1), 2).tolist() == [1, 0]
    assert index.nearest(latents[0], (1, 1), 5).tolist() == [1, 3]  # row 0 is z's own
    assert index.nearest(latents[0] + np.sqrt(SAME_LATENT) * 2, (1, 1), 1).tolist() == [0]
    assert index.nearest(latents[0], (3, 1), 5).tolist() == [] and index.nearest(latents[0], (1, 1), 0).tolist() == []
