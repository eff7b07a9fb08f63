"""Shoebox rooms, a simulated tetrahedral array and its A-to-B conversion to FOA.

Conventions:
    * Room frame: x along the room length, y along its width, z up; the array looks along +x.
      Azimuth is counter-clockwise from +x (``+90°`` = +y = left), elevation up from the
      horizontal plane, both in degrees.
    * **Array**: four cardioid capsules (pyroomacoustics ``CardioidFamily``, ``p = 0.5``)
      pointing outwards along the vertices of a tetrahedron: FLU (az 45°, el 35.26°), FRD
      (−45°, −35.26°), BLD (135°, −35.26°), BRU (−135°, 35.26°), at ``capsule_radius_m``
      from the centre: 0 (default) makes them coincident, `TETRA_RADIUS_M` (v1) spaced.
    * **A-to-B** (`A_TO_B`, rows W, Y, Z, X = ACN order): W = ½(FLU+FRD+BLD+BRU),
      Y = (√3/2)(FLU−FRD+BLD−BRU), Z = (√3/2)(FLU−FRD−BLD+BRU), X = (√3/2)(FLU+FRD−BLD−BRU).
      For coincident ideal cardioids this gives SN3D (AmbiX) FOA: W = p, Y = p·sin(az)cos(el),
      Z = p·sin(el), X = p·cos(az)cos(el) (the DCASE FOA convention), exactly and at every
      frequency, since pyroomacoustics' cardioids are frequency-flat: coincident capsules
      need no equalisation filter. **Why coincident**: a spaced tetrahedron cannot be
      equalised to FOA. Measured on the plane-wave model of this array (r = 14.7 mm) with
      the least-squares 4×4 matrix filter per frequency over the sphere (the best linear
      A-to-B there is), the largest error of X²/W, Y²/W, Z²/W against cos/sin of the
      direction is 0.04 at 1 kHz, 0.32 at 4 kHz, 6.8 at 8 kHz and 191 at 12 kHz (spatial
      aliasing; r = 10 mm: 0.48 at 8 kHz, 10.8 at 12 kHz); unequalised, X/Y/Z carry 2.4×
      (8 kHz) to 4.1× (12 kHz) their diffuse-field share. With ``capsule_radius_m > 0`` the
      plain matrix is used, as in v1.
    * **RIRs** (hybrid): pyroomacoustics image sources up to order ``ism_order`` (ray tracing
      and air absorption off, frequency-flat absorption from ``pra.inverse_sabine``), complete
      up to the time ``t_c`` before which no image of higher order can arrive; from ``t_c`` on a
      stochastic diffuse tail (independent Gaussian W, X, Y, Z with powers 1, ⅓, ⅓, ⅓, the SN3D
      diffuse field) decays at exactly the nominal RT60, its level fitted to the W energy of the
      image sources before ``t_c``; the two cross-fade over 5 ms (power-complementary).
      Full-order image sources would take minutes per room at RT60 = 0.8 s.
    * **Direct path**: the same array in the same room with ``max_order = 0`` (image order 0
      only), so the direct RIR is the order-0 part of the full one, same time origin.
    * pyroomacoustics runs single-threaded here: its multi-threaded RIR builder sums in a
      thread-dependent order, which would break bit-identical outputs across machines. The
      thread count is a pyroomacoustics global, set to 1 and restored around each call, so
      do not simulate from several threads of one process at once (joblib's default process
      backend is fine).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyroomacoustics as pra
from pyroomacoustics.directivities import CardioidFamily

from casdri.errors import InputError

__all__ = ["SPEED_OF_SOUND_M_S", "TETRA_RADIUS_M", "CAPSULES", "A_TO_B", "RoomSpec", "FoaRir",
           "direction_unit", "capsule_positions", "position_from_direction", "simulate_foa_rirs",
           "diffuse_foa_noise"]

SPEED_OF_SOUND_M_S = 343.0
TETRA_RADIUS_M = 0.0147
_EL = math.degrees(math.atan(1.0 / math.sqrt(2.0)))  # 35.26°
CAPSULES = (("FLU", 45.0, _EL), ("FRD", -45.0, -_EL), ("BLD", 135.0, -_EL), ("BRU", -135.0, _EL))
_S3 = math.sqrt(3.0) / 2.0
A_TO_B = np.array([[0.5, 0.5, 0.5, 0.5],
                   [_S3, -_S3, _S3, -_S3],
                   [_S3, -_S3, -_S3, _S3],
                   [_S3, _S3, -_S3, -_S3]])
_FADE_S = 0.005
_FDL_HALF = 40  # pyroomacoustics frac_delay_length 81 // 2: sample index of time 0


@dataclass(frozen=True)
class RoomSpec:
    """A shoebox room with the array in it.

    Attributes:
        dims_m: ``(length x, width y, height z)`` in metres.
        rt60_s: nominal reverberation time in seconds.
        mic_m: array centre ``(x, y, z)`` in metres.
    """

    dims_m: tuple[float, float, float]
    rt60_s: float
    mic_m: tuple[float, float, float]


@dataclass(frozen=True)
class FoaRir:
    """FOA impulse responses of one source, ``(4, n_taps) float64`` (W, Y, Z, X) at the
    simulation rate; ``direct`` is the order-0 part (see module conventions)."""

    full: np.ndarray
    direct: np.ndarray


def direction_unit(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector ``(3,)`` of a direction (module conventions), angles in degrees."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])


def capsule_positions(mic_m: tuple[float, float, float],
                      capsule_radius_m: float = 0.0) -> np.ndarray:
    """Capsule positions ``(3, 4)`` in metres, columns in `CAPSULES` order."""
    centre = np.asarray(mic_m, dtype=float)
    return np.stack([centre + capsule_radius_m * direction_unit(az, el)
                     for _, az, el in CAPSULES], axis=1)


def position_from_direction(mic_m: tuple[float, float, float], azimuth_deg: float,
                            elevation_deg: float, distance_m: float) -> np.ndarray:
    """Source position ``(3,)`` in metres seen from the array centre (module conventions).

    Args:
        mic_m: array centre ``(x, y, z)`` in metres.
        azimuth_deg: counter-clockwise from +x, degrees.
        elevation_deg: up from the horizontal plane, degrees.
        distance_m: distance from the array centre, metres.
    """
    return (np.asarray(mic_m, dtype=float)
            + distance_m * direction_unit(azimuth_deg, elevation_deg))


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    old = pra.constants.get("num_threads")
    pra.constants.set("num_threads", 1)
    try:
        yield
    finally:
        pra.constants.set("num_threads", old)


def _absorption(room: RoomSpec) -> tuple[float, int]:
    """Energy absorption and pyroomacoustics' suggested image order for the nominal RT60."""
    try:
        e_absorption, order = pra.inverse_sabine(room.rt60_s, list(room.dims_m))
    except ValueError:
        raise InputError(f"no absorption gives RT60 {room.rt60_s:.3f} s in a room of "
                         f"{room.dims_m} m (Sabine); use smaller rooms or longer RT60s") from None
    return float(e_absorption), int(order)


def _capsule_rirs(room: RoomSpec, sources_m: np.ndarray, fs: int, max_order: int,
                  capsule_radius_m: float) -> list[list[np.ndarray]]:
    """``[source][capsule] -> (n_taps,) float64`` pyroomacoustics RIRs."""
    e_absorption, _ = _absorption(room)
    box = pra.ShoeBox(list(room.dims_m), fs=fs, materials=pra.Material(e_absorption),
                      max_order=max_order, air_absorption=False, ray_tracing=False,
                      use_rand_ism=False)
    box.add_microphone_array(
        capsule_positions(room.mic_m, capsule_radius_m),
        directivity=[CardioidFamily(orientation=direction_unit(az, el), p=0.5)
                     for _, az, el in CAPSULES])
    for pos in sources_m:
        box.add_source(list(pos))
    with _single_thread():
        box.compute_rir()
    return [[np.asarray(box.rir[m][s], dtype=np.float64) for m in range(len(CAPSULES))]
            for s in range(len(sources_m))]


def _a_to_b(capsules: list[np.ndarray], n_taps: int) -> np.ndarray:
    a = np.zeros((len(capsules), n_taps))
    for m, h in enumerate(capsules):
        a[m, :min(len(h), n_taps)] = h[:n_taps]
    return A_TO_B @ a


def complete_until_m(dims_m: tuple[float, float, float], ism_order: int) -> float:
    """Path length (m) below which every image source has order <= ``ism_order``.

    An image with ``n`` reflections on the walls normal to axis ``i`` lies at least
    ``(n − 1)·L_i`` from the array along that axis, so an image of order ``ism_order + 1``
    is at least ``min Σ`` over the splits of that order of ``sqrt(Σ ((n_i − 1)₊ L_i)²)`` away.
    """
    n = ism_order + 1
    best = math.inf
    for nx, ny in itertools.product(range(n + 1), repeat=2):
        if nx + ny <= n:
            counts = (nx, ny, n - nx - ny)
            best = min(best, math.sqrt(sum((max(c - 1, 0) * d) ** 2
                                           for c, d in zip(counts, dims_m))))
    return best


def _with_tail(ism_b: np.ndarray, room: RoomSpec, fs: int, ism_order: int,
               rng: np.random.Generator, max_taps: int) -> np.ndarray:
    """Image-source FOA RIR ``(4, n)`` → hybrid RIR ``(4, n_taps)`` (module conventions)."""
    decay = math.log(1e6) / room.rt60_s  # energy decay rate, 1/s
    i_c = _FDL_HALF + int(complete_until_m(room.dims_m, ism_order) / SPEED_OF_SOUND_M_S * fs)
    n_fade = int(round(_FADE_S * fs))
    i_fade = i_c - n_fade
    t = (np.arange(i_fade) - _FDL_HALF) / fs
    fit = slice(i_fade // 2, i_fade)  # energy fit on the second half before the fade
    level = np.sum(ism_b[0, fit] ** 2) / np.sum(np.exp(-decay * t[fit]))
    n_taps = min(max_taps, i_c + int(math.ceil(room.rt60_s * fs)))
    t_all = (np.arange(n_taps) - _FDL_HALF) / fs
    envelope = np.sqrt(level * np.exp(-decay * t_all))
    tail = rng.standard_normal((4, n_taps)) * np.array([[1.0], [3 ** -0.5], [3 ** -0.5],
                                                        [3 ** -0.5]])
    ramp = np.clip((np.arange(n_taps) - i_fade) / max(n_fade, 1), 0.0, 1.0) * (math.pi / 2)
    out = tail * (envelope * np.sin(ramp))
    n_ism = min(n_taps, ism_b.shape[1])
    out[:, :n_ism] += ism_b[:, :n_ism] * np.cos(ramp[:n_ism])
    return out


def simulate_foa_rirs(room: RoomSpec, sources_m: np.ndarray, sample_rate_hz: int,
                      rng: np.random.Generator, ism_order: int = 12,
                      max_taps: int | None = None,
                      capsule_radius_m: float = 0.0) -> list[FoaRir]:
    """Hybrid FOA RIRs of several sources in one room (module conventions).

    Args:
        room: room, RT60 and array position.
        sources_m: ``(n_sources, 3)`` source positions in metres, inside the room.
        sample_rate_hz: simulation rate (Hz).
        rng: draws the diffuse tails (consumed in source order).
        ism_order: highest image-source order simulated exactly.
        max_taps: cap on the RIR length in samples (e.g. the soundscape length).
        capsule_radius_m: array radius in metres (0: coincident capsules, exact FOA).

    Returns:
        One `FoaRir` per source, in order.

    Raises:
        InputError: no wall absorption gives the RT60 in this room.
    """
    sources_m = np.atleast_2d(np.asarray(sources_m, dtype=float))
    order = min(ism_order, _absorption(room)[1])
    full = _capsule_rirs(room, sources_m, sample_rate_hz, order, capsule_radius_m)
    direct = _capsule_rirs(room, sources_m, sample_rate_hz, 0, capsule_radius_m)
    cap = max_taps if max_taps is not None else 10 * sample_rate_hz
    out = []
    for caps_full, caps_direct in zip(full, direct):
        ism_b = _a_to_b(caps_full, max(len(h) for h in caps_full))
        hybrid = _with_tail(ism_b, room, sample_rate_hz, order, rng, cap)
        direct_b = _a_to_b(caps_direct, max(len(h) for h in caps_direct))
        out.append(FoaRir(full=hybrid, direct=direct_b))
    return out


def diffuse_foa_noise(mono: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Isotropic diffuse FOA field ``(4, n) float64`` from a mono background ``(n,)``.

    W is ``mono``; Y, Z and X are copies with independent uniformly random phase per FFT bin
    (same magnitude spectrum, mutually uncorrelated), scaled by ``1/√3``: the SN3D powers of
    a spherically isotropic diffuse field.
    """
    n = mono.shape[0]
    spectrum = np.fft.rfft(mono)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=(3, spectrum.shape[0]))
    phase[:, 0] = 0.0
    if n % 2 == 0:
        phase[:, -1] = 0.0
    others = np.fft.irfft(spectrum * np.exp(1j * phase), n=n, axis=-1) / math.sqrt(3.0)
    return np.concatenate([mono[None, :], others], axis=0)
