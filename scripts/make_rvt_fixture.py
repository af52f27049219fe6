#!/usr/bin/env python3
"""Build tests/fixtures/rvt: RVT's preprocessed Gen1/Gen4 layout, made by RVT's own code.

RVT (uzh-rpg/RVT, MIT licence) is not a dependency of spikeyolo and no RVT code
is copied here: this script runs RVT from a checkout given on the command line.

    python scripts/make_rvt_fixture.py RVT_CHECKOUT OUT_DIR [--work DIR] [--events DAT]

Run it in a throwaway environment that has RVT's requirements, e.g.

    python3.11 -m venv /tmp/rvt_fixture/env
    /tmp/rvt_fixture/env/bin/pip install torch numpy h5py hdf5plugin numba omegaconf tqdm einops torchdata==0.9.0
    git -C /work/.mirror/uzh-rpg+RVT/repo archive HEAD | tar -x -C /tmp/rvt_fixture/RVT
    /tmp/rvt_fixture/env/bin/python scripts/make_rvt_fixture.py /tmp/rvt_fixture/RVT tests/fixtures/rvt

What it does:

1. Decodes the real Prophesee DAT recording tests/fixtures/events/gen4_truncated.dat
   (360,000 CD events, 1280x720) with numpy.
2. Writes RVT's *raw* input layout twice (a gen4 input tree and a gen1 input
   tree), each with splits train/, val/ (empty), test/:
     gen4: <name>_td.h5      all events, sensor 1280x720
     gen1: <name>_td.dat.h5  the events inside the 304x240 window at
           x0=GEN1_CROP_X0, y0=GEN1_CROP_Y0, shifted to the origin
   (RVT's preprocess_dataset.py looks for 'td.h5' for gen4 and 'td.dat.h5'
   for gen1), plus <name>_bbox.npy Prophesee labels made deterministically
   below (make_gen4_labels / make_gen1_labels). Each sequence is put in BOTH
   train/ and test/, so the train-only "faulty huge bbox" filter shows up as a
   difference between the two outputs.
3. Runs RVT's scripts/genx/preprocess_dataset.py from scripts/genx, exactly as
   RVT's README says (stacked_hist.yaml, const_duration.yaml,
   filter_gen{1,4}.yaml, -ds gen{1,4}, -np 1).
4. Copies RVT's output trees to OUT_DIR/gen4 and OUT_DIR/gen1 unchanged.
5. Loads every output sequence with RVT's
   data.genx_utils.sequence_rnd.SequenceForRandomAccess for sequence_length
   1 and 3, and writes what it returns to OUT_DIR/expected.json, together
   with the h5 layout, the per-index digests, the timestamps and index maps.
6. Copies RVT's LICENSE to OUT_DIR/LICENSE-RVT-MIT.txt and the raw label
   files to OUT_DIR/raw/<ds>/<name>_bbox.npy (the raw event h5 files are not
   kept: they are ~4.5 MB each and this script regenerates them).

Determinism: the labels come from numpy.random.default_rng(SEED); the events
are fixed. With the versions listed in tests/fixtures/rvt/PROVENANCE.md two runs
give byte-identical files (numpy 2.4's savez dates zip members 1980-01-01, and
RVT's HDF5 datasets carry no times). Other library versions may change the
bytes of the .h5/.npz containers, so expected.json records, per file, both the
sha256 of the bytes and a "data_sha256" of the decoded arrays.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EVENTS = REPO / 'tests' / 'fixtures' / 'events' / 'gen4_truncated.dat'
EVENTS_SHA256 = '76ea1e6c66d697a0ca8179b84ee1c0fdddbc436277c86e765c3ee88f688bdab9'

SEED = 20240601
EV_REPR_NAME = 'stacked_histogram_dt=50_nbins=10'
SEQ_NAME = {'gen4': 'fixture_gen4_000', 'gen1': 'fixture_gen1_000'}
SPLITS_WITH_DATA = ('train', 'test')
# The top-left 304x240 of the recording holds only 312 of the 360,000 events, so
# the gen1 sequence uses the densest 304x240 window (on a 16 px grid) instead.
GEN1_CROP_X0, GEN1_CROP_Y0 = 352, 160
SENSOR_HW = {'gen4': (720, 1280), 'gen1': (240, 304)}

BBOX_DTYPE = np.dtype([('t', '<u8'), ('x', '<f4'), ('y', '<f4'), ('w', '<f4'), ('h', '<f4'),
                       ('class_id', 'u1'), ('class_confidence', '<f4'), ('track_id', '<u4')])


# ----------------------------------------------------------------------------- events
def read_dat(path: Path):
    data = path.read_bytes()
    pos = 0
    while data[pos:pos + 1] == b'%':
        pos = data.index(b'\n', pos) + 1
    ev_type, ev_size = data[pos], data[pos + 1]
    assert ev_size == 8, ev_size
    rec = np.frombuffer(data[pos + 2:], dtype=[('t', '<u4'), ('w', '<u4')])
    w = rec['w'].astype(np.int64)
    x = (w & 0x3FFF).astype(np.uint16)
    y = ((w >> 14) & 0x3FFF).astype(np.uint16)
    p = ((w >> 28) & 0xF).astype(np.uint8)
    t = rec['t'].astype(np.int64)
    assert set(np.unique(p).tolist()) <= {0, 1}
    assert np.all(np.diff(t) >= 0)
    return dict(t=t, x=x, y=y, p=p)


def write_td_h5(path: Path, ev: dict, height: int, width: int):
    import h5py
    with h5py.File(str(path), 'w') as f:
        g = f.create_group('events')
        g.create_dataset('x', data=ev['x'].astype(np.uint16))
        g.create_dataset('y', data=ev['y'].astype(np.uint16))
        g.create_dataset('p', data=ev['p'].astype(np.uint8))
        g.create_dataset('t', data=ev['t'].astype(np.int64))
        g.create_dataset('height', data=np.int64(height))
        g.create_dataset('width', data=np.int64(width))


# ----------------------------------------------------------------------------- labels
def _box(t, x, y, w, h, c, conf, tid):
    return (int(t), x, y, w, h, c, conf, tid)


def _random_boxes(rng, t, n, width, height, max_class, tid0):
    out = []
    for i in range(n):
        w = float(rng.uniform(0.08, 0.25) * width)
        h = float(rng.uniform(0.1, 0.3) * height)
        x = float(rng.uniform(0, width - w - 2))
        y = float(rng.uniform(0, height - h - 2))
        out.append(_box(t, x, y, w, h, int(rng.integers(0, max_class + 1)),
                        float(rng.uniform(0.5, 1.0)), tid0 + i))
    return out


def make_gen4_labels(rng) -> tuple[np.ndarray, dict]:
    """60 Hz label times t = round(k * 1e6 / 60), k = 5..75 (83 ms .. 1.25 s).

    RVT's frames are the label times ~100 ms apart, starting at the first time
    >= 100 ms: k = 6, 12, ..., 72 (t = 100,000 * m, m = 1..12), some jittered.
    """
    W, H = 1280, 720
    jitter = {24: 700, 54: -600, 33: 400}          # k -> us (frames m=4, m=9, and one non-frame)
    rows, cases = [], {}
    for k in range(5, 76):
        t = round(k * 1e6 / 60) + jitter.get(k, 0)
        m = k // 6 if k % 6 == 0 else None
        if m == 2:   # box partly outside right/bottom: cropped to x+w=1279, y+h=719, then 639/359 at ds2
            rows += _random_boxes(rng, t, 1, W, H, 2, 100)
            rows.append(_box(t, 1200.25, 650.5, 150.0, 120.0, 2, 0.9, 101))
            cases['partly_outside_right_bottom'] = t
        elif m == 1:  # box partly outside left/top: cropped to x=0, y=0
            rows.append(_box(t, -30.5, -20.0, 100.0, 80.0, 0, 0.8, 110))
            rows += _random_boxes(rng, t, 2, W, H, 2, 111)
            cases['partly_outside_left_top'] = t
        elif m == 3:  # tiny boxes: side < 5 (dropped), 5 <= side < 10 (kept by gen4's conservative filter); class 3
            rows.append(_box(t, 300.0, 300.0, 4.0, 30.0, 1, 0.7, 120))
            rows.append(_box(t, 500.0, 200.0, 7.0, 40.0, 0, 0.7, 121))
            rows.append(_box(t, 100.0, 100.0, 200.0, 150.0, 3, 0.9, 122))
            rows += _random_boxes(rng, t, 1, W, H, 2, 123)
            cases['tiny_side_lt5_dropped__side_7_kept__class3_dropped'] = t
        elif m == 4:  # jittered frame time; class 6 dropped
            rows.append(_box(t, 640.0, 360.0, 60.0, 60.0, 6, 0.6, 130))
            rows += _random_boxes(rng, t, 2, W, H, 2, 131)
            cases['jitter_plus_700us__class6_dropped'] = t
        elif m == 5:  # very wide box (cropped w = 1279 > 1152): dropped from train only
            rows.append(_box(t, -40.0, 300.0, 1400.0, 100.0, 2, 0.5, 140))
            rows += _random_boxes(rng, t, 2, W, H, 2, 141)
            cases['wide_box_train_only_drop'] = t
        elif m == 7:  # every box filtered out: this time is no RVT frame at all
            rows.append(_box(t, 10.0, 10.0, 3.0, 3.0, 0, 0.9, 150))
            rows.append(_box(t, 400.0, 400.0, 100.0, 100.0, 5, 0.9, 151))
            rows.append(_box(t, 1290.0, 100.0, 50.0, 50.0, 2, 0.9, 152))
            rows.append(_box(t, 200.0, 730.0, 50.0, 40.0, 1, 0.9, 153))
            cases['all_filtered_no_frame'] = t
        elif m == 9:  # jittered frame time
            rows += _random_boxes(rng, t, 3, W, H, 2, 160)
            cases['jitter_minus_600us'] = t
        elif m == 10:  # only a wide box: a frame in test, no frame in train
            rows.append(_box(t, 50.0, 400.0, 1200.0, 200.0, 2, 0.8, 170))
            cases['only_wide_box_frame_in_test_only'] = t
        elif m == 11:  # a box completely outside the frame (dropped) + a box touching x = 1279
            rows.append(_box(t, 1300.0, 300.0, 40.0, 40.0, 2, 0.9, 180))
            rows.append(_box(t, 1180.0, 0.0, 99.0, 50.0, 1, 0.9, 181))
            rows += _random_boxes(rng, t, 1, W, H, 2, 182)
            cases['fully_outside_dropped__box_to_edge'] = t
        else:
            n = 1 + int(rng.integers(0, 3))
            rows += _random_boxes(rng, t, n, W, H, 2, 200 + k)
            if k == 39:  # non-frame time with a class 4 box
                rows.append(_box(t, 10.0, 10.0, 50.0, 50.0, 4, 0.9, 190))
    arr = np.array(rows, dtype=BBOX_DTYPE)
    arr = arr[np.argsort(arr['t'], kind='stable')]
    return arr, cases


def make_gen1_labels(rng) -> tuple[np.ndarray, dict]:
    """Label times every 50 ms from 50 ms to 1.25 s.

    RVT's gen1 frame step is 250 ms from the first time >= 100 ms, so only
    100, 350, (600: all filtered), 850.8 (jittered), 1100 ms can become frames.
    """
    W, H = 304, 240
    rows, cases = [], {}
    for j in range(1, 26):
        t = 50000 * j
        if t == 850000:
            t += 800
        if t == 100000:  # partly outside left/top + tiny side < 5; psee filter: diag >= 30, sides >= 10
            rows.append(_box(t, -20.0, 30.0, 60.0, 40.0, 0, 0.9, 10))
            rows.append(_box(t, 250.5, 200.25, 80.0, 60.0, 1, 0.8, 11))
            rows.append(_box(t, 100.0, 100.0, 4.0, 20.0, 0, 0.8, 12))
            rows += _random_boxes(rng, t, 1, W, H, 1, 13)
            cases['partly_outside__tiny_side4_dropped'] = t
        elif t == 350000:  # side 8 (dropped by psee side >= 10), 20x20 diag 28 (dropped), 22x22 kept, wide 290 > 273 (train only)
            rows.append(_box(t, 30.0, 30.0, 8.0, 40.0, 0, 0.9, 20))
            rows.append(_box(t, 60.0, 60.0, 20.0, 20.0, 1, 0.9, 21))
            rows.append(_box(t, 150.0, 150.0, 22.0, 22.0, 1, 0.9, 22))
            rows.append(_box(t, 5.0, 100.0, 290.0, 50.0, 0, 0.9, 23))
            rows += _random_boxes(rng, t, 1, W, H, 1, 24)
            cases['side8_dropped__diag28_dropped__22x22_kept__wide_train_only'] = t
        elif t == 600000:  # all filtered out -> no frame; next frame 500 ms after the previous one
            rows.append(_box(t, 30.0, 30.0, 9.0, 40.0, 0, 0.9, 30))
            rows.append(_box(t, 60.0, 60.0, 15.0, 15.0, 1, 0.9, 31))
            rows.append(_box(t, 310.0, 60.0, 30.0, 30.0, 1, 0.9, 32))
            cases['all_filtered_no_frame'] = t
        elif t == 850800:
            rows += _random_boxes(rng, t, 2, W, H, 1, 40)
            cases['jitter_plus_800us'] = t
        elif t == 1100000:  # only a wide box: frame in test only
            rows.append(_box(t, 0.0, 80.0, 300.0, 100.0, 0, 0.7, 50))
            cases['only_wide_box_frame_in_test_only'] = t
        else:
            rows += _random_boxes(rng, t, 1 + int(rng.integers(0, 3)), W, H, 1, 100 + j)
    arr = np.array(rows, dtype=BBOX_DTYPE)
    arr = arr[np.argsort(arr['t'], kind='stable')]
    return arr, cases


# ----------------------------------------------------------------------------- helpers
def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p: Path) -> str:
    return sha256_bytes(p.read_bytes())


def data_digest(p: Path) -> str:
    """Digest of the decoded content (independent of zip / HDF5 metadata)."""
    h = hashlib.sha256()
    if p.suffix == '.npy':
        a = np.load(str(p))
        h.update(str(a.dtype.descr).encode() + str(a.shape).encode() + a.tobytes())
    elif p.suffix == '.npz':
        with np.load(str(p)) as z:
            for k in sorted(z.files):
                a = z[k]
                h.update(k.encode() + str(a.dtype.descr).encode() + str(a.shape).encode() + a.tobytes())
    elif p.suffix == '.h5':
        import h5py
        with h5py.File(str(p), 'r') as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    a = obj[()]
                    h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode()
                             + np.ascontiguousarray(a).tobytes())
            f.visititems(visit)
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


def ensure_torchdata(work: Path) -> str | None:
    """RVT imports torchdata.datapipes.map.MapDataPipe (a base class only). Stub it if absent."""
    try:
        import torchdata.datapipes.map  # noqa: F401
        return None
    except Exception:
        stub = work / 'stubs' / 'torchdata' / 'datapipes' / 'map'
        stub.mkdir(parents=True, exist_ok=True)
        for d in (stub.parent.parent, stub.parent):
            (d / '__init__.py').write_text('')
        (stub / '__init__.py').write_text('class MapDataPipe:\n    pass\n')
        return str(work / 'stubs')


# ----------------------------------------------------------------------------- RVT loader probe
def probe_sequence(rvt: Path, seq_dir: Path, dataset: str, rel: str) -> dict:
    import h5py
    import hdf5plugin  # noqa: F401
    import torch
    from data.genx_utils.sequence_rnd import SequenceForRandomAccess
    from data.utils.types import DatasetType, DataType

    ds2 = dataset == 'gen4'
    ev_dir = seq_dir / 'event_representations_v2' / EV_REPR_NAME
    h5_path = ev_dir / f"event_representations{'_ds2_nearest' if ds2 else ''}.h5"
    out = {'dataset_type': dataset.upper(), 'downsample_by_factor_2': ds2,
           'ev_repr_file': str(h5_path.relative_to(seq_dir))}
    with h5py.File(str(h5_path), 'r') as f:
        out['h5_keys'] = sorted(f.keys())
        d = f['data']
        plist = d.id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
        out['h5_data'] = {
            'name': 'data', 'shape': list(d.shape), 'dtype': str(d.dtype), 'chunks': list(d.chunks),
            'maxshape': [None if s is None else s for s in d.maxshape],
            'compression': d.compression, 'compression_opts': None if d.compression_opts is None else list(d.compression_opts),
            'filters': [{'id': int(fl[0]), 'flags': int(fl[1]), 'cd_values': [int(v) for v in fl[2]],
                         'name': fl[3].decode() if isinstance(fl[3], bytes) else str(fl[3])} for fl in filters],
            'shuffle': d.shuffle,
        }
        per = []
        for i in range(d.shape[0]):
            a = d[i]
            per.append({'sum': int(a.astype(np.int64).sum()), 'sha256': sha256_bytes(a.tobytes()),
                        'nonzero': int(np.count_nonzero(a)), 'max': int(a.max())})
        out['h5_per_index'] = per
    out['repr_timestamps_us'] = np.load(str(ev_dir / 'timestamps_us.npy')).tolist()
    o2r = np.load(str(ev_dir / 'objframe_idx_2_repr_idx.npy'))
    out['objframe_idx_2_repr_idx'] = o2r.tolist()
    out['objframe_idx_2_repr_idx_dtype'] = str(o2r.dtype)
    lab_ts = np.load(str(seq_dir / 'labels_v2' / 'timestamps_us.npy'))
    out['labels_timestamps_us'] = lab_ts.tolist()
    out['labels_timestamps_us_dtype'] = str(lab_ts.dtype)
    with np.load(str(seq_dir / 'labels_v2' / 'labels.npz')) as z:
        lab = z['labels']
        oi2li = z['objframe_idx_2_label_idx']
        out['labels_npz'] = {
            'files': sorted(z.files),
            'labels_dtype': [list(x) for x in lab.dtype.descr],
            'labels': [[v.item() for v in r] for r in lab],
            'objframe_idx_2_label_idx': oi2li.tolist(),
            'objframe_idx_2_label_idx_dtype': str(oi2li.dtype),
        }

    loader = {}
    for L in (1, 3):
        seq = SequenceForRandomAccess(path=seq_dir, ev_representation_name=EV_REPR_NAME, sequence_length=L,
                                      dataset_type=DatasetType.GEN4 if ds2 else DatasetType.GEN1,
                                      downsample_by_factor_2=ds2, only_load_end_labels=False)
        samples = []
        for index in range(len(seq)):
            item = seq[index]
            corrected = index + seq.start_idx_offset
            end_idx = int(seq.objframe_idx_2_repr_idx[corrected]) + 1
            start_idx = end_idx - L
            ev = torch.stack(item[DataType.EV_REPR]).numpy()
            labels = []
            for lab in item[DataType.OBJLABELS_SEQ]:
                if lab is None:
                    labels.append(None)
                else:
                    labels.append({'input_size_hw': list(lab.input_size_hw),  # int for gen1, float for gen4 ds2
                                   'rows': lab.object_labels.tolist()})
            samples.append({
                'index': index, 'objframe_idx': corrected, 'start_repr_idx': start_idx, 'end_repr_idx': end_idx,
                'ev_repr': {'shape': list(ev.shape), 'dtype': str(ev.dtype), 'sum': int(ev.astype(np.int64).sum()),
                            'sha256': sha256_bytes(ev.tobytes())},
                'labels_present': [x is not None for x in labels],
                'labels': labels,
                'is_first_sample': item[DataType.IS_FIRST_SAMPLE],
                'is_padded_mask': item[DataType.IS_PADDED_MASK],
            })
        loader[str(L)] = {'len': len(seq), 'start_idx_offset': int(seq.start_idx_offset), 'samples': samples}
    out['SequenceForRandomAccess'] = loader
    return out


# ----------------------------------------------------------------------------- main
def run(rvt: Path, out: Path, work: Path, events: Path) -> None:
    assert (rvt / 'scripts' / 'genx' / 'preprocess_dataset.py').exists(), rvt
    assert sha256_file(events) == EVENTS_SHA256, 'unexpected events file'
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stub_dir = ensure_torchdata(work)

    ev = read_dat(events)
    m = ((ev['x'] >= GEN1_CROP_X0) & (ev['x'] < GEN1_CROP_X0 + 304)
         & (ev['y'] >= GEN1_CROP_Y0) & (ev['y'] < GEN1_CROP_Y0 + 240))
    ev_gen1 = dict(t=ev['t'][m], x=(ev['x'][m] - GEN1_CROP_X0).astype(np.uint16),
                   y=(ev['y'][m] - GEN1_CROP_Y0).astype(np.uint16), p=ev['p'][m])
    rng = np.random.default_rng(SEED)
    lab4, cases4 = make_gen4_labels(rng)
    lab1, cases1 = make_gen1_labels(rng)

    inputs = {}
    for ds, evd, lab in (('gen4', ev, lab4), ('gen1', ev_gen1, lab1)):
        in_dir = work / f'in_{ds}'
        for split in ('train', 'val', 'test'):
            (in_dir / split).mkdir(parents=True)
        h, w = SENSOR_HW[ds]
        name = SEQ_NAME[ds]
        td = f"{name}_td{'.dat' if ds == 'gen1' else ''}.h5"
        for split in SPLITS_WITH_DATA:
            write_td_h5(in_dir / split / td, evd, h, w)
            np.save(str(in_dir / split / f'{name}_bbox.npy'), lab)
        inputs[ds] = {
            'td_h5_name': td, 'bbox_npy_name': f'{name}_bbox.npy', 'splits': list(SPLITS_WITH_DATA),
            'sensor_hw': [h, w], 'num_events': int(len(evd['t'])),
            't_first_us': int(evd['t'][0]), 't_last_us': int(evd['t'][-1]),
            'events_sha256': {k: sha256_bytes(np.ascontiguousarray(evd[k]).tobytes()) for k in ('t', 'x', 'y', 'p')},
            'bbox_npy_sha256': sha256_file(in_dir / 'train' / f'{name}_bbox.npy'),
            'bbox_labels': [[v.item() for v in r] for r in lab],
            'label_cases': cases4 if ds == 'gen4' else cases1,
        }
        if ds == 'gen1':
            inputs[ds]['crop_x0_y0'] = [GEN1_CROP_X0, GEN1_CROP_Y0]

    genx = rvt / 'scripts' / 'genx'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([p for p in (stub_dir, env.get('PYTHONPATH')) if p])
    commands = []
    for ds in ('gen4', 'gen1'):
        cmd = [sys.executable, 'preprocess_dataset.py', str(work / f'in_{ds}'), str(work / f'out_{ds}'),
               'conf_preprocess/representation/stacked_hist.yaml', 'conf_preprocess/extraction/const_duration.yaml',
               f'conf_preprocess/filter_{ds}.yaml', '-ds', ds, '-np', '1']
        commands.append('cd scripts/genx && python ' + ' '.join(cmd[1:]).replace(str(work), 'WORK'))
        subprocess.run(cmd, cwd=str(genx), env=env, check=True)

    out.mkdir(parents=True, exist_ok=True)
    for ds in ('gen4', 'gen1'):
        if (out / ds).exists():
            shutil.rmtree(out / ds)
        shutil.copytree(work / f'out_{ds}', out / ds)
    shutil.copyfile(rvt / 'LICENSE', out / 'LICENSE-RVT-MIT.txt')
    # the raw Prophesee labels are tiny: keep them (the *_td*.h5 event files, ~4.5 MB each, are not kept)
    if (out / 'raw').exists():
        shutil.rmtree(out / 'raw')
    for ds in ('gen4', 'gen1'):
        (out / 'raw' / ds).mkdir(parents=True)
        shutil.copyfile(work / f'in_{ds}' / 'train' / f'{SEQ_NAME[ds]}_bbox.npy', out / 'raw' / ds / f'{SEQ_NAME[ds]}_bbox.npy')

    # probe with RVT's loader (import from the checkout)
    sys.path.insert(0, str(rvt))
    if stub_dir:
        sys.path.insert(0, stub_dir)
    sequences = {}
    for ds in ('gen4', 'gen1'):
        for split in SPLITS_WITH_DATA:
            seq_dir = out / ds / split / SEQ_NAME[ds]
            rel = f'{ds}/{split}/{SEQ_NAME[ds]}'
            sequences[rel] = probe_sequence(rvt, seq_dir, ds, rel)

    files = {}
    for p in sorted(out.rglob('*')):
        if p.is_file() and p.name not in ('expected.json', 'PROVENANCE.md'):
            rel = str(p.relative_to(out))
            files[rel] = {'bytes': p.stat().st_size, 'sha256': sha256_file(p), 'data_sha256': data_digest(p)}

    import h5py, hdf5plugin, numba, omegaconf, torch  # noqa: E401
    try:
        import torchdata
        td_ver = getattr(torchdata, '__version__', '?')
    except Exception:
        td_ver = None
    expected = {
        'about': 'RVT (uzh-rpg/RVT) preprocessing + SequenceForRandomAccess answers; see PROVENANCE.md',
        'rvt_commit': _rvt_commit(rvt),
        'ev_representation_name': EV_REPR_NAME,
        'seed': SEED,
        'torchdata_stubbed': stub_dir is not None,
        'versions': {'python': sys.version.split()[0], 'numpy': np.__version__, 'torch': torch.__version__,
                     'h5py': h5py.__version__, 'hdf5': h5py.version.hdf5_version,
                     'hdf5plugin': hdf5plugin.version, 'numba': numba.__version__,
                     'omegaconf': omegaconf.__version__, 'torchdata': td_ver},
        'preprocess_commands': commands,
        'inputs': inputs,
        'sequences': sequences,
        'files': files,
    }
    (out / 'expected.json').write_text(_dump(expected) + '\n')


def _rvt_commit(rvt: Path) -> str | None:
    env_commit = os.environ.get('RVT_COMMIT')
    if env_commit:
        return env_commit
    try:
        return subprocess.run(['git', '-C', str(rvt), 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return None


def _dump(obj) -> str:
    """JSON with short lists (numbers / label rows) kept on one line."""
    text = json.dumps(obj, indent=1, sort_keys=False)
    import re
    # collapse lists of scalars onto one line
    pat = re.compile(r'\[\s*((?:-?[\d.eE+-]+|null|true|false|"[^"\n]*")(?:,\s*(?:-?[\d.eE+-]+|null|true|false|"[^"\n]*"))*)\s*\]')
    return pat.sub(lambda mm: '[' + ', '.join(s.strip() for s in mm.group(1).split(',')) + ']', text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('rvt', type=Path, help='RVT checkout (uzh-rpg/RVT)')
    ap.add_argument('out', type=Path, help='output folder, e.g. tests/fixtures/rvt')
    ap.add_argument('--work', type=Path, default=Path('/tmp/rvt_fixture/work'), help='scratch folder (wiped)')
    ap.add_argument('--events', type=Path, default=DEFAULT_EVENTS)
    a = ap.parse_args()
    run(a.rvt.resolve(), a.out.resolve(), a.work.resolve(), a.events.resolve())


if __name__ == '__main__':
    main()
