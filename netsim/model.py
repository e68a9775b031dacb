"""A flow-level model of a swarm pull: what ``netsim run`` measures, for fleets it cannot start.

Time advances in small steps (``step``). Every node has an upload and a download cap (payload: a
share of the link cap); every uploader has slots (an agent's unchoke slots, shared by all its
torrents; an origin's upload slots per torrent), each serving one neighbour for an unchoke
interval, one piece at a time; active transfers share the caps (each flow gets the smaller of its
uploader's and its downloader's fair share, then grows while both have room). A downloader picks
the rarest piece its uploader has, first within its stream window (from the first piece it lacks,
per layer). A piece it got is served onward after the fitted delays (``Constants``); the pull
completes when its in-order hash loop has passed every byte. Neighbours are a random graph of the
degree the tracker's hand-out and the connection limit allow; every agent reaches its layers'
origins.

Left out: TCP dynamics (slow start, loss), latency other than the fitted per-piece constants,
tit-for-tat (unchoking is round robin among interested neighbours), end-game duplicate requests,
failed dials, CPU contention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from netsim.scenario import Scenario
from netsim.stats import percentile
from swarmreg.swarm.metainfo import piece_length_for


@attrs.frozen
class Policy:
    """The swarm's settings, with today's defaults (swarmreg/config.py, swarm/settings.py)."""

    unchoke_slots: int = attrs.field(default=8, validator=attrs.validators.ge(1))  # swarm.unchoke_slots
    seed_upload_slots: int = attrs.field(default=1, validator=attrs.validators.ge(0))  # 0: unchoke_slots
    stream_window: int = attrs.field(default=16, validator=attrs.validators.ge(1))  # agent.stream_window
    connections_limit: int = attrs.field(default=500, validator=attrs.validators.ge(2))  # per session
    tracker_max_peers: int = attrs.field(default=50, validator=attrs.validators.ge(1))  # peers per reply
    # The tracker pushes every later peer to those already there (all-at-once: everyone knows everyone).
    tracker_push: bool = True
    unchoke_interval: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    # Payload per byte of link cap (tc counts link-layer bytes: TCP/IP headers take about 5%).
    payload: float = attrs.field(default=0.95, validator=[attrs.validators.gt(0), attrs.validators.le(1)])


# `--set` keys of the daemons (scenario agent_settings / herd_settings) that the model knows.
SETTINGS = {
    "swarm.unchoke_slots": "unchoke_slots",
    "swarm.seed_upload_slots": "seed_upload_slots",
    "agent.stream_window": "stream_window",
    "swarm.connections_limit": "connections_limit",
    "tracker.max_peers": "tracker_max_peers",
}


def policy_from_settings(settings: Sequence[str], policy: Policy = Policy()) -> tuple[Policy, list[str]]:
    """``policy`` with the known ``key=value`` settings applied, and the settings it cannot model."""
    changes: dict[str, Any] = {}
    ignored = []
    for setting in settings:
        key, _, value = setting.partition("=")
        field = SETTINGS.get(key.strip())
        if field is None or not value.strip().lstrip("-").isdigit():
            ignored.append(setting)
            continue
        changes[field] = int(value)
    return attrs.evolve(policy, **changes), ignored


_GE0 = attrs.validators.ge(0.0)


@attrs.frozen
class Constants:
    """What the model does not derive from settings: fitted to measured runs (calibration.toml)."""

    # From an agent's arrival to its first request (metainfo, announce, dials).
    start_s: float = attrs.field(default=0.0, validator=_GE0)
    # From a piece's last byte to its holder serving it (hash check, HAVE, the next request): a
    # fixed time, plus a share of the piece's hop time (its length over an agent's per-slot rate).
    have_delay_s: float = attrs.field(default=0.0, validator=_GE0)
    have_delay_hops: float = attrs.field(default=0.0, validator=_GE0)
    # A connection's idle time before each piece (a request round trip not hidden by pipelining).
    piece_gap_s: float = attrs.field(default=0.0, validator=_GE0)
    # Bytes per second of an agent's in-order hash loop (0: instant).
    hash_rate: float = attrs.field(default=0.0, validator=_GE0)
    # Pieces an origin's slot sends one agent before it serves another (or the unchoke interval
    # ends). libtorrent's seeding_piece_quota is 20, but measured first pieces (the median agent's
    # at 1.4 s in swarm30, where 20 pieces to one agent at a time would take over 3 s) say the
    # origin spreads its pieces much faster.
    origin_piece_quota: int = attrs.field(default=20, validator=attrs.validators.ge(1))


@attrs.frozen
class Swarm:
    """What is pulled, by whom, over which links (bytes per second, before ``payload``)."""

    agents: int
    layer_sizes: tuple[int, ...]  # each layer a blob, its own torrent
    origins: int = 1
    origin_up: float = 0.0  # per origin; 0: uncapped
    agent_up: float = 0.0
    agent_down: float = 0.0

    @property
    def layers(self) -> int:
        return len(self.layer_sizes)

    def pieces(self) -> int:
        """Pieces of every layer, each layer padded to the longest's count (the model's columns)."""
        return self.layers * max(-(-size // piece_length_for(size)) for size in self.layer_sizes)


@attrs.frozen
class Result:
    completion_s: list[float]  # sorted, one per agent
    origin_bytes: float  # sent by every origin together
    total_bytes: int  # the image (every layer)
    piece_length: int  # the smallest layer's
    neighbours: int
    steps: int
    first_piece_s: list[float]  # sorted: when each agent's first piece arrived, after it started


UNCAPPED = 1e15
RETRY_STEPS = 2


def swarm_of(scenario: Scenario, agents: int | None = None) -> Swarm:
    """The model's view of a netsim scenario (``agents`` instead of the scenario's, if given)."""
    links = scenario.links
    layers = (scenario.blob_size,) if scenario.image is None else scenario.image.layers
    return Swarm(agents=agents or scenario.agents, layer_sizes=layers,
                 origins=scenario.origins, origin_up=links.origin_up, agent_up=links.agent_up,
                 agent_down=links.agent_down)


def degree(swarm: Swarm, policy: Policy) -> int:
    """Neighbours per agent per torrent: the tracker's hand-out within the connection limit."""
    known = swarm.agents - 1 if policy.tracker_push else 2 * policy.tracker_max_peers
    per_torrent = max(1, (policy.connections_limit - swarm.origins) // swarm.layers)
    return max(0, min(swarm.agents - 1, known, per_torrent))


def step(swarm: Swarm, policy: Policy) -> float:
    """The simulation's time step: an eighth of a piece's hop at an agent's per-slot rate, and no
    longer than the fastest flow takes over a piece (a slot ends at most one piece a step), at most
    50 ms."""
    slot_rate = min(swarm.agent_up / policy.unchoke_slots, swarm.agent_down) * policy.payload
    fastest = min(max(swarm.origin_up, swarm.agent_up), swarm.agent_down) * policy.payload
    shortest = min(piece_length_for(size) for size in swarm.layer_sizes)
    return min(0.05, shortest / slot_rate / 8, shortest / fastest) if slot_rate else 0.05


# Nodes x pieces the model holds three boolean matrices of (10,000 hosts x 750 pieces: 7.5 M).
MAX_CELLS = 100_000_000
MAX_STEPS = 200_000
# A pull not done after this many T* is a swarm that does not work: the simulation stops there.
GIVE_UP_BOUNDS = 20


def give_up(bound: float) -> float:
    """Simulated seconds after which a swarm whose lower bound is ``bound`` is given up on."""
    return max(60.0, GIVE_UP_BOUNDS * bound)


def refusal(swarm: Swarm, policy: Policy, bound: float) -> str | None:
    """Why the model cannot simulate ``swarm`` (None: it can)."""
    if not (swarm.layer_sizes and min(swarm.layer_sizes) > 0 and swarm.origin_up > 0 and swarm.agent_up > 0
            and swarm.agent_down > 0):
        return "the model needs a blob size and every link capped (origin up, agent up and down above 0)"
    pieces = swarm.pieces()
    if (swarm.agents + swarm.origins) * pieces > MAX_CELLS:
        return (f"{swarm.agents} hosts x {pieces} pieces is more than the model holds "
                f"({MAX_CELLS:,} node-pieces)")
    if give_up(bound) / step(swarm, policy) > MAX_STEPS:
        return (f"{GIVE_UP_BOUNDS} T* ({give_up(bound):g} s) is more than {MAX_STEPS:,} of the model's steps "
                f"({step(swarm, policy):g} s, an eighth of a piece's hop): links too slow for the pieces")
    return None


def simulate(swarm: Swarm, policy: Policy = Policy(), constants: Constants = Constants(), *,
             seed: int = 1, dt: float | None = None, max_time: float = 3600.0) -> Result:
    """Every agent's completion time for ``swarm`` (all arriving at once), and the origins' egress."""
    rng = np.random.default_rng(seed)
    n, o, layers = swarm.agents, swarm.origins, swarm.layers
    nodes = o + n  # origins first, then agents
    # Each layer's pieces in its own piece length; shorter layers padded with empty pieces that
    # every node holds (nobody asks for them), so that every layer has per_layer columns.
    lengths = [piece_length_for(size) for size in swarm.layer_sizes]
    counts = [math.ceil(size / length) for size, length in zip(swarm.layer_sizes, lengths, strict=True)]
    per_layer = max(counts)
    pieces = per_layer * layers
    layer_of = np.repeat(np.arange(layers), per_layer)
    sizes = np.zeros((layers, per_layer))
    for layer, (total, length, count) in enumerate(zip(swarm.layer_sizes, lengths, counts, strict=True)):
        sizes[layer, :count] = length
        sizes[layer, count - 1] = total - length * (count - 1)
    size = sizes.reshape(-1)
    phantom = size == 0
    prefix_bytes = np.concatenate([np.zeros((layers, 1)), np.cumsum(sizes, axis=1)], axis=1)  # before piece i
    layer_bytes = np.array(swarm.layer_sizes, dtype=np.float64)

    def cap(rate: float) -> float:
        return rate * policy.payload if rate else UNCAPPED

    up = np.array([cap(swarm.origin_up)] * o + [cap(swarm.agent_up)] * n)
    down = np.array([UNCAPPED] * o + [cap(swarm.agent_down)] * n)

    # Each layer is seeded by one origin (the tracker's rendezvous hash; spread round robin here).
    origin_of_layer = np.arange(layers) % o
    have = np.zeros((nodes, pieces), dtype=bool)  # may serve it
    got = np.zeros((nodes, pieces), dtype=bool)  # holds it (or is getting it: in flight)
    for layer in range(layers):
        have[origin_of_layer[layer], layer_of == layer] = True
    got[:o] = True
    have[:, phantom] = got[:, phantom] = True
    holders = have.sum(axis=0).astype(np.float64)
    layer_bits = _pack(layer_of[None, :] == np.arange(layers)[:, None])

    # Upload slots: per origin per torrent it seeds, per agent for all its torrents.
    seed_slots = policy.seed_upload_slots or policy.unchoke_slots
    owner_list, layer_list = [], []
    for layer in range(layers):
        owner_list += [int(origin_of_layer[layer])] * seed_slots
        layer_list += [layer] * seed_slots
    for agent in range(n):
        owner_list += [o + agent] * policy.unchoke_slots
        layer_list += [-1] * policy.unchoke_slots
    owner = np.array(owner_list)
    slot_layer = np.array(layer_list)
    slots = owner.size
    partner = np.full(slots, -1)
    until = np.zeros(slots)
    piece = np.full(slots, -1)
    remaining = np.zeros(slots)
    gap = np.zeros(slots)
    credit = np.zeros(slots)  # seconds of the last step a slot's finished piece left unused
    retry = np.zeros(slots)  # when a slot that found no partner looks again
    quota = np.zeros(slots, dtype=np.int64)  # pieces a seed slot may still send its partner
    is_origin_slot = owner < o
    # A peer is served by one slot of an agent (its unchoke slots span its torrents), and by one
    # slot of an origin per torrent (a connection each): slots in groups, an agent's or an
    # origin's torrent's, and each group's slots in a row of slot_table, -1 padded (read as the
    # slot past the end).
    group = np.where(is_origin_slot, nodes + slot_layer, owner)
    order = np.argsort(group, kind="stable")
    rank = np.arange(slots) - np.searchsorted(group[order], group[order])
    slot_table = np.full((nodes + layers, int(np.bincount(group).max())), -1)
    slot_table[group[order], rank] = order

    d = degree(swarm, policy)
    # A symmetric random graph of degree d over agents: neighbours at +-offset (a circulant).
    if d >= n - 1:
        offsets = np.arange(1, n)
    else:
        half = rng.choice(np.arange(1, (n + 1) // 2), size=max(1, d // 2), replace=False)
        offsets = np.concatenate([half, n - half])

    pending_nodes: list[np.ndarray] = []  # pieces received, not yet served: (when, node, piece)
    pending_pieces: list[np.ndarray] = []
    pending_when: list[float] = []
    hashed = np.zeros((n, layers))  # bytes of each layer the agent's hash loop has passed
    done_at = np.full(n, np.inf)
    first_at = np.full(n, np.inf)
    origin_bytes = 0.0
    started = np.concatenate([np.ones(o, dtype=bool), np.zeros(n, dtype=bool)])

    slot_rate = min(up[o:].min() / policy.unchoke_slots, down[o:].min())
    have_delay = constants.have_delay_s + constants.have_delay_hops * min(lengths) / slot_rate
    dt = dt or step(swarm, policy)
    layer_offsets = np.arange(layers + 1) * per_layer
    t, steps = 0.0, 0
    while t < max_time and not np.isfinite(done_at).all():
        steps += 1
        if t >= constants.start_s:
            started[o:] = True
        while pending_when and pending_when[0] <= t:
            pending_when.pop(0)
            who, which = pending_nodes.pop(0), pending_pieces.pop(0)
            have[who, which] = True
            np.add.at(holders, which, 1.0)
        first_missing = _first_missing(got[o:], layers, per_layer)

        # Slots between pieces whose unchoke ran out look again; then every idle slot picks a neighbour.
        idle = piece < 0
        partner[idle & ((until <= t) | (is_origin_slot & (quota <= 0)))] = -1
        holding = np.count_nonzero(have, axis=1) > 0  # an owner with nothing to serve need not look
        seeking = np.flatnonzero(idle & (partner < 0) & started[owner] & holding[owner] & (gap <= 0) & (retry <= t))
        if seeking.size:
            _choose_partners(seeking, owner, partner, is_origin_slot, o, n, offsets, started, _pack(have),
                             _pack(got), layer_bits, slot_layer, group, slot_table, nodes, rng)
            until[seeking[partner[seeking] >= 0]] = t + policy.unchoke_interval
            # A slot that found nobody interested looks again a few steps later (cheaper, and
            # about as soon as a new piece makes someone interested).
            retry[seeking[partner[seeking] < 0]] = t + RETRY_STEPS * dt
            quota[seeking] = constants.origin_piece_quota
        asking = np.flatnonzero((piece < 0) & (partner >= 0))
        if asking.size:
            chosen = _choose_pieces(asking, owner, partner, slot_layer, have, got, holders, first_missing,
                                    layer_of, layer_offsets, policy.stream_window, rng, o)
            partner[asking[chosen < 0]] = -1
            credit[asking[chosen < 0]] = 0.0
            ok, which = asking[chosen >= 0], chosen[chosen >= 0]
            got[partner[ok], which] = True
            piece[ok] = which
            quota[ok] -= 1
            remaining[ok] = size[which]
            gap[ok] = constants.piece_gap_s

        # Transfers share the caps; a connection's piece gap sends nothing.
        gap -= dt
        active = np.flatnonzero((piece >= 0) & (gap <= 0))
        if active.size:
            rate = _share(owner[active], partner[active], up, down, nodes)
            # A piece that ends within the step leaves the rest of the step to its slot's next piece.
            span = dt + credit[active]
            sent = np.minimum(remaining[active], rate * span)
            remaining[active] -= sent
            origin_bytes += float(sent[is_origin_slot[active]].sum())
            ended = remaining[active] <= 1e-9
            credit[active] = 0.0
            credit[active[ended]] = span[ended] - sent[ended] / rate[ended]
            finished = active[ended]
            if finished.size:
                receivers = partner[finished] - o
                first_at[receivers] = np.minimum(first_at[receivers], t + dt - constants.start_s)
                pending_when.append(t + dt + have_delay)
                pending_nodes.append(partner[finished].copy())
                pending_pieces.append(piece[finished].copy())
                piece[finished] = -1
        t += dt

        # The in-order hash loop: up to the first piece not here, at hash_rate.
        arrived = _first_missing(_arrived(got[o:], piece, partner, o), layers, per_layer)
        ready = prefix_bytes[np.arange(layers)[None, :], arrived]
        hashing = constants.hash_rate * dt if constants.hash_rate else np.inf
        hashed = np.minimum(ready, hashed + hashing)
        complete = (hashed >= layer_bytes - 1e-6).all(axis=1) & ~np.isfinite(done_at)
        done_at[complete] = t
    return Result(completion_s=sorted(done_at.tolist()), first_piece_s=sorted(first_at.tolist()),
                  origin_bytes=origin_bytes,
                  total_bytes=sum(swarm.layer_sizes), piece_length=min(lengths), neighbours=d, steps=steps)


def _first_missing(holds: np.ndarray, layers: int, per_layer: int) -> np.ndarray:
    """Per agent and layer, the index of the first piece it lacks (per_layer: none)."""
    blocks = holds.reshape(holds.shape[0], layers, per_layer)
    first = np.argmin(blocks, axis=2)
    first[blocks.all(axis=2)] = per_layer
    return first


def _arrived(got: np.ndarray, piece: np.ndarray, partner: np.ndarray, o: int) -> np.ndarray:
    """``got`` without the pieces still in flight."""
    arrived = got.copy()
    busy = piece >= 0
    arrived[partner[busy] - o, piece[busy]] = False
    return arrived


def _pack(bits: np.ndarray) -> np.ndarray:
    """Rows of booleans as rows of uint64 words (for fast any-overlap tests)."""
    packed = np.packbits(bits, axis=-1)
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), dtype=np.uint8)], axis=-1)
    return packed.view(np.uint64)


def _choose_partners(seeking, owner, partner, is_origin_slot, o, n, offsets, started, have_bits, got_bits,
                     layer_bits, slot_layer, group, slot_table, nodes, rng, tries: int = 4) -> None:
    """Each seeking slot serves a random interested neighbour it does not serve already (or none)."""
    padded = np.append(partner, -1)  # slot_table's -1 (no slot) reads -1 (no partner)
    for _ in range(tries):
        open_ = seeking[partner[seeking] < 0]
        if not open_.size:
            return
        src = owner[open_]
        agent_src = ~is_origin_slot[open_]
        candidate = o + rng.integers(0, n, size=open_.size)
        if not offsets.size:  # a lone agent: only origins have anyone to serve
            open_, src, candidate = open_[~agent_src], src[~agent_src], candidate[~agent_src]
            if not open_.size:
                return
        else:
            pick = rng.integers(0, offsets.size, size=open_.size)
            candidate[agent_src] = o + (src[agent_src] - o + offsets[pick[agent_src]]) % n
        wants = have_bits[src] & ~got_bits[candidate]
        layer = slot_layer[open_]
        restricted = layer >= 0
        wants[restricted] &= layer_bits[layer[restricted]]
        ok = wants.any(axis=1) & started[candidate]
        ok &= ~(padded[slot_table[group[open_]]] == candidate[:, None]).any(axis=1)  # served by another slot
        # Two slots of one group picking the same peer in this round: the first takes it.
        keys = group[open_] * nodes + candidate
        first = np.zeros(open_.size, dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        ok &= first
        partner[open_[ok]] = candidate[ok]
        padded[open_[ok]] = candidate[ok]


def _choose_pieces(asking, owner, partner, slot_layer, have, got, holders, first_missing, layer_of,
                   offsets, window, rng, o) -> np.ndarray:
    """For each (uploader, downloader) slot, the piece the downloader asks for (-1: none): the
    rarest it lacks within its stream window (per layer, from the first piece it lacks), else the
    rarest it lacks. Two slots asking for one piece for the same downloader: the first gets it."""
    src, dst = owner[asking], partner[asking]
    layers, per_layer = first_missing.shape[1], offsets[1] - offsets[0]
    # The window's pieces, (slots, layers * window), out-of-layer ones masked.
    start = first_missing[dst - o]
    index = start[:, :, None] + np.arange(window)[None, None, :]
    inside = index < per_layer
    index = (np.minimum(index, per_layer - 1) + offsets[:-1][None, :, None]).reshape(asking.size, -1)
    wants = inside.reshape(asking.size, -1) & have[src[:, None], index] & ~got[dst[:, None], index]
    layer = slot_layer[asking]
    restricted = layer >= 0
    wants[restricted] &= (np.repeat(np.arange(layers), window)[None, :] == layer[restricted, None])
    chosen = _rarest(wants, index, holders, rng)
    # No window piece from this uploader: the rarest of any it has.
    rest = np.flatnonzero(chosen < 0)
    if rest.size:
        wants = have[src[rest]] & ~got[dst[rest]]
        sub = restricted[rest]
        wants[sub] &= layer_of[None, :] == layer[rest][sub, None]
        chosen[rest] = _rarest(wants, np.broadcast_to(np.arange(have.shape[1]), wants.shape), holders, rng)
    keys = dst * have.shape[1] + chosen
    first = np.zeros(asking.size, dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    chosen[~first] = -1
    return chosen


def _rarest(wants: np.ndarray, index: np.ndarray, holders: np.ndarray, rng) -> np.ndarray:
    """Per row, the piece ``index`` of the wanted column held by the fewest (ties at random; -1: none)."""
    if not wants.size:
        return np.full(wants.shape[0], -1)
    score = holders[index] + rng.random(wants.shape, dtype=np.float32)
    score[~wants] = np.inf
    column = np.argmin(score, axis=1)
    chosen = index[np.arange(wants.shape[0]), column]
    return np.where(wants.any(axis=1), chosen, -1)


def _share(src: np.ndarray, dst: np.ndarray, up: np.ndarray, down: np.ndarray, nodes: int,
           rounds: int = 3) -> np.ndarray:
    """Each flow's rate: the smaller of its uploader's and downloader's fair share, then scaled up
    while both ends have room (every round keeps both caps)."""
    n_up = np.bincount(src, minlength=nodes)
    n_down = np.bincount(dst, minlength=nodes)
    rate = np.minimum(up[src] / n_up[src], down[dst] / n_down[dst])
    for _ in range(rounds):
        out = np.bincount(src, weights=rate, minlength=nodes)
        into = np.bincount(dst, weights=rate, minlength=nodes)
        grow = np.minimum(up[src] / np.maximum(out[src], 1e-300), down[dst] / np.maximum(into[dst], 1e-300))
        rate = rate * np.maximum(grow, 1.0)
    return rate


def figures(result: Result, bound: float) -> Mapping[str, float]:
    """p50, p99, p99.9 and max completion in seconds and against ``bound``, and origin egress."""
    out: dict[str, float] = {}
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)):
        seconds = percentile(result.completion_s, q)
        out[f"{name}_s"] = seconds
        out[f"{name}_vs_bound"] = seconds / bound if bound else math.inf
    out["origin_egress_x"] = result.origin_bytes / result.total_bytes
    return out
