"""Locations: where buyers and shops are, and how far apart (great-circle miles)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_MILES = 3958.8

#: Countries of the synthetic marketplace: (name, share of people, [(lat, lon, weight) of population centres]).
COUNTRIES: tuple[tuple[str, float, tuple[tuple[float, float, float], ...]], ...] = (
    ("US", 0.55, ((40.7, -74.0, 3), (34.0, -118.2, 2), (41.9, -87.6, 1.5), (29.8, -95.4, 1), (47.6, -122.3, 1),
                  (33.7, -84.4, 1), (39.7, -105.0, 0.7))),
    ("GB", 0.12, ((51.5, -0.1, 3), (53.5, -2.2, 1), (55.9, -3.2, 0.7))),
    ("CA", 0.08, ((43.7, -79.4, 2), (45.5, -73.6, 1), (49.3, -123.1, 1))),
    ("DE", 0.08, ((52.5, 13.4, 1.5), (48.1, 11.6, 1), (50.1, 8.7, 1))),
    ("FR", 0.06, ((48.9, 2.35, 2), (45.8, 4.8, 1))),
    ("AU", 0.06, ((-33.9, 151.2, 1.5), (-37.8, 145.0, 1.3))),
    ("IN", 0.05, ((19.1, 72.9, 1), (28.6, 77.2, 1), (12.97, 77.6, 1))),
)
COUNTRY_NAMES: tuple[str, ...] = tuple(c[0] for c in COUNTRIES)


def sample_locations(rng: np.random.Generator, n: int, spread_deg: float = 1.5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` locations: a country by share, a population centre by weight, then Gaussian jitter.

    Returns
    -------
    lat, lon : np.ndarray
        Degrees, float64 arrays of length ``n``.
    country : np.ndarray
        Integer index into :data:`COUNTRY_NAMES`.
    """
    shares = np.array([c[1] for c in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n, p=shares / shares.sum())
    lat = np.empty(n)
    lon = np.empty(n)
    for ci, (_, _, centres) in enumerate(COUNTRIES):
        idx = np.flatnonzero(country == ci)
        w = np.array([c[2] for c in centres])
        pick = rng.choice(len(centres), size=idx.size, p=w / w.sum())
        centre = np.array([(c[0], c[1]) for c in centres])[pick]
        lat[idx] = centre[:, 0] + rng.normal(0, spread_deg, idx.size)
        lon[idx] = centre[:, 1] + rng.normal(0, spread_deg, idx.size)
    return np.clip(lat, -89.0, 89.0), lon, country


def haversine_miles(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in miles between broadcastable arrays of (lat, lon) in degrees."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_MILES * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
