"""Data: the synthetic dataset through real encode/decode, the UCF-101 reader, splits, sampling, augmentation."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from trainable.data import sampling, transforms
from trainable.data.datasets import ClipSpec, ConsecutiveClips, EvalClips, TrainClips, consecutive_clips
from trainable.data.index import VideoRecord
from trainable.data.subsets import labeled_subset
from trainable.data.synthetic import MOTIONS, SyntheticSpec, ensure_synthetic, render
from trainable.data.ucf101 import read_ucf101
from trainable.data.video import DECODERS, Decoder, VideoDecodeError, VideoReader, decode

from ffmpeg import torchcodec_ready


def test_synthetic_dataset_round_trips_with_labels_and_counts(tiny_dataset: Path) -> None:
    index = read_ucf101(tiny_dataset)
    assert index.classes == list(MOTIONS)[:3]
    assert len(index.train) == 3 * 8 and len(index.test) == 3 * 2
    assert not index.missing
    for split in (index.train, index.test):
        per_class = np.bincount([r.label for r in split], minlength=3)
        assert len(set(per_class.tolist())) == 1
    for record in index.train + index.test:
        assert Path(record.path).parent.name == index.classes[record.label]
    # The official lists use CRLF and 1-based labels; the reader turns them into 0-based labels.
    assert (tiny_dataset / "trainlist01.txt").read_bytes().count(b"\r\n") == 24
    assert (tiny_dataset / "classInd.txt").read_text().splitlines()[0].strip() == "1 MoveUp"


def test_decoded_frames_match_what_was_rendered(tiny_dataset: Path) -> None:
    record = read_ucf101(tiny_dataset).train[0]
    frames = decode(record.path)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == torch.uint8
    spec = SyntheticSpec(classes=3, train_per_class=8, test_per_class=2, frames=16, size=32)
    rendered = render("MoveUp", np.random.default_rng([0, 0, 0, 0]), spec)
    # Lossy MPEG-4: close on average, and far closer than a different video would be.
    assert np.abs(frames.numpy().astype(int) - rendered.astype(int)).mean() < 12
    other = render("MoveUp", np.random.default_rng([0, 0, 0, 1]), spec)
    assert np.abs(other.astype(int) - rendered.astype(int)).mean() > 12


def test_synthetic_generation_is_deterministic(tmp_path: Path) -> None:
    spec = SyntheticSpec(classes=2, train_per_class=2, test_per_class=1, frames=8, size=16)

    def digest(root: Path) -> str:
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()

    a = ensure_synthetic(spec, tmp_path / "a", progress=False)
    b = ensure_synthetic(spec, tmp_path / "b", progress=False)
    assert digest(a) == digest(b)
    assert ensure_synthetic(spec, a, progress=False) == a  # already there: reused
    with pytest.raises(ValueError, match="another spec"):
        ensure_synthetic(SyntheticSpec(classes=2, train_per_class=3, test_per_class=1, frames=8, size=16), a)


def test_motion_classes_need_time() -> None:
    """Up/down and grow/shrink differ only in the direction of time."""
    spec = SyntheticSpec(frames=16, size=32, noise=0.0, distractors=0)

    def height(frame: np.ndarray) -> float:
        weight = frame.astype(float).sum(axis=-1)
        weight = np.clip(weight - np.median(weight), 0, None).sum(axis=1)  # the blob over the background
        return float((weight * np.arange(32)).sum() / weight.sum())

    up = render("MoveUp", np.random.default_rng(1), spec)
    down = render("MoveDown", np.random.default_rng(1), spec)
    assert height(up[-1]) < height(up[0]) - 5
    assert height(down[-1]) > height(down[0]) + 5
    grow = render("Grow", np.random.default_rng(1), spec)
    assert (grow[-1] > 100).sum() > (grow[0] > 100).sum()


@pytest.mark.parametrize("bias", [0.0, 0.5, 1.0])
def test_scene_bias_ties_the_colours_of_that_share_of_videos_to_their_class(tmp_path: Path, bias: float) -> None:
    """A video in its class's scene has the class's background; the others keep their random one."""
    from trainable.data.synthetic import scenes

    spec = SyntheticSpec(classes=3, train_per_class=12, test_per_class=1, frames=4, size=16, noise=0.0, distractors=0, scene_bias=bias)
    index = read_ucf101(ensure_synthetic(spec, tmp_path / "d", progress=False))
    looks = scenes(spec)
    in_scene = 0
    for record in index.train:
        frame = decode(record.path)[0].numpy().reshape(-1, 3).astype(float)
        background = np.median(frame, axis=0) / 255  # the object covers far less than half the frame
        in_scene += bool(np.abs(background - looks[record.label].background).max() < 0.05)
    share = in_scene / len(index.train)
    # 36 videos: the share is binomial around the bias (an unbiased video matches its scene by chance rarely)
    assert abs(share - bias) < 0.25 and (share == 1.0) is (bias == 1.0) and (share < 0.2) is (bias == 0.0)


def test_a_video_in_its_scene_differs_from_its_unbiased_self_only_in_colour() -> None:
    from trainable.data.synthetic import scenes

    spec = SyntheticSpec(classes=2, frames=8, size=32, noise=0.0, distractors=0)
    look = scenes(spec)[1].look(np.random.default_rng(0))
    plain, biased = render("Grow", np.random.default_rng(3), spec), render("Grow", np.random.default_rng(3), spec, look)
    assert not np.array_equal(plain, biased)
    # the same pixels change from one frame to the next: the motion is the same
    assert np.array_equal(np.diff(plain.astype(int), axis=0) != 0, np.diff(biased.astype(int), axis=0) != 0)


@pytest.mark.parametrize("seed", range(5))
def test_two_sub_motion_classes_change_what_moves_midway(seed: int) -> None:
    """UpThenSideways moves only vertically, then only sideways; GrowThenFall grows in place, then only falls."""
    t = np.linspace(0.0, 1.0, 64)
    x, y, factor, _ = MOTIONS["UpThenSideways"](t, np.random.default_rng(seed), 64)
    early, late = t < 0.4, t > 0.6
    assert np.ptp(x[early]) == 0 and np.ptp(y[early]) > 0.1 and np.ptp(y[late]) == 0 and np.ptp(x[late]) > 0.1
    assert np.all(np.diff(y) <= 0)  # up: y falls on the image
    x, y, factor, _ = MOTIONS["GrowThenFall"](t, np.random.default_rng(seed), 64)
    assert np.ptp(y[early]) == 0 and np.ptp(factor[early]) > 0.2 and np.ptp(factor[late]) == 0 and np.ptp(y[late]) > 0.1
    assert np.ptp(x) == 0
    # the default dataset keeps its ten classes, the two-phase ones come after
    assert list(MOTIONS)[10:] == ["UpThenSideways", "GrowThenFall"] and SyntheticSpec().classes == 10


def test_flip_never_changes_a_synthetic_class() -> None:
    """No class is the mirror image of another: the generator holds no left/right or cw/ccw pair."""
    assert not {"MoveLeft", "MoveRight", "CircleClockwise"} & set(MOTIONS)


def test_labeled_split_is_deterministic_per_seed_and_differs_across_seeds(tiny_dataset: Path) -> None:
    train = read_ucf101(tiny_dataset).train
    a, b, c = labeled_subset(train, 2, seed=0), labeled_subset(train, 2, seed=0), labeled_subset(train, 2, seed=1)
    assert [r.name for r in a.labeled] == [r.name for r in b.labeled] and a.subset_hash == b.subset_hash
    assert a.subset_hash != c.subset_hash
    assert np.bincount([r.label for r in a.labeled]).tolist() == [2, 2, 2]
    assert len(a.labeled) + len(a.unlabeled) == len(train)
    assert not {r.name for r in a.labeled} & {r.name for r in a.unlabeled}
    # The order of the input list does not matter, only the seed.
    assert labeled_subset(list(reversed(train)), 2, seed=0).subset_hash == a.subset_hash


def test_clip_sampling_strides_and_loops_short_videos() -> None:
    idx = sampling.random_clip(100, frames=8, stride=4, rng=np.random.default_rng(0))
    assert np.all(np.diff(idx) == 4)
    short = sampling.clip_at(10, frames=8, stride=2, start=0)
    assert short.tolist() == [0, 2, 4, 6, 8, 0, 2, 4]
    views = sampling.uniform_clips(64, frames=4, stride=4, count=3)
    assert [v[0] for v in views] == [0, 26, 51]
    assert sampling.uniform_clips(64, frames=4, stride=4, count=1)[0][0] == 25


def _texture(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` noise: any wrong offset, scale or mirror changes most pixels."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8))


def _plane(frames: int, height: int, width: int) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` linear in x and y, 1 to 3 levels a pixel: bilinear resampling is exact on it, so a
    crop moved by half a pixel differs by a few levels, and a wrong scale, place or mirror by many more."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([3 * x + y, x + 3 * y, 250 - 2 * x - 2 * y], axis=-1)
    assert image.min() >= 0 and image.max() <= 255
    return torch.from_numpy(image.astype(np.uint8)[None].repeat(frames, 0))


def _resize_crop_flip(frames: torch.Tensor, crop: transforms.Crop, size: int) -> torch.Tensor:
    """The reference: resize whole frames with torchvision, then crop, then mirror; ``(T, H, W, C)``."""
    from torchvision.transforms.v2 import functional as F

    video = F.resize(frames.permute(0, 3, 1, 2), [crop.height, crop.width], antialias=True)
    out = video[..., crop.top : crop.top + size, crop.left : crop.left + size]
    return (out.flip(-1) if crop.flip else out).permute(0, 2, 3, 1)


def _differ(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


def test_loader_crop_resamples_only_the_region_yet_equals_resize_then_crop() -> None:
    """For fixed draws (corners included; enlarging, shrinking, unscaled), the crop taken in source
    coordinates is the crop of the whole resized frames, mirrored alike in every frame: exactly where the
    region starts on a whole source pixel, and within half a source pixel's shift elsewhere."""
    h, w, size = 48, 64, 32
    noise, plane = _texture(3, h, w), _plane(3, h, w)
    for flip in (False, True):
        for top, left in ((0, 0), (h - size, w - size), (5, 17)):  # unscaled: a plain crop, exact
            crop = transforms.Crop(h, w, top, left, flip)
            ours = transforms.resized_crop(noise, crop, size)
            assert ours.dtype == torch.uint8 and ours.shape == (3, size, size, 3) and ours.is_contiguous()
            assert _differ(ours, _resize_crop_flip(noise, crop, size)) == 0, crop
        # Twice and half the size, even starts: on whole source pixels, so exact but for the first row and
        # column, whose filters would read the pixel before the region.
        for crop in (transforms.Crop(2 * h, 2 * w, 10, 36, flip), transforms.Crop(h // 2, w // 2, 2, 4, flip)):
            small = 16 if crop.height < size else size
            ours, reference = transforms.resized_crop(noise, crop, small), _resize_crop_flip(noise, crop, small)
            inside = (slice(None), slice(1, None), slice(None, -1) if flip else slice(1, None))
            assert _differ(ours[inside], reference[inside]) == 0, crop
            assert _differ(ours, reference) > 0  # the first row does differ: the comparison sees the pixels
        for short in (size, size + 5, h + 4, h + 20):  # shrinking, enlarging slightly (sides equal), and more
            nh, nw = short, int(short * w / h)
            for top in range(0, nh - size + 1, 3):
                crop = transforms.Crop(nh, nw, top, (nw - size) * top // max(nh - size, 1), flip)
                assert _differ(transforms.resized_crop(plane, crop, size), _resize_crop_flip(plane, crop, size)) <= 4, crop
    crop = transforms.Crop(h + 7, w + 9, 3, 5, False)
    mirrored = transforms.resized_crop(noise, transforms.Crop(h + 7, w + 9, 3, 5, True), size)
    assert torch.equal(mirrored, transforms.resized_crop(noise, crop, size).flip(2))  # every frame mirrored


@pytest.mark.parametrize(("resize_min", "resize_max"), [(48, 48), (36, 52)])
def test_loader_crop_draws_as_torchvisions_random_resize_crop_flip(resize_min: int, resize_max: int) -> None:
    """Same seed, same draws: the loader's crop is v2.RandomResize(min, max + 1) + RandomCrop + RandomHorizontalFlip
    (exactly when the frames are not scaled; within half a source pixel's shift when they are)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    opts = transforms.SpatialOptions(input_size=32, resize_min=resize_min, resize_max=resize_max)
    reference = v2.Compose(
        [v2.RandomResize(resize_min, resize_max + 1, antialias=True), v2.RandomCrop(32), v2.RandomHorizontalFlip()]
    )
    loader = transforms.geometric(opts)
    frames = _texture(4, 48, 64) if resize_min == resize_max == 48 else _plane(4, 48, 64)
    tolerance = 0 if resize_min == resize_max == 48 else 4
    draws = set()
    for seed in range(40):
        torch.manual_seed(seed)
        ours = loader(frames)
        torch.manual_seed(seed)
        theirs = reference(tv_tensors.Video(frames.permute(0, 3, 1, 2))).as_subclass(torch.Tensor).permute(0, 2, 3, 1)
        assert ours.shape == (4, 32, 32, 3) and _differ(ours, theirs) <= tolerance, seed
        torch.manual_seed(seed)
        draws.add(transforms.draw_crop(48, 64, opts))
    assert {d.flip for d in draws} == {False, True} and len({(d.top, d.left) for d in draws}) > 10
    assert {d.height for d in draws} <= set(range(resize_min, resize_max + 1))
    torch.manual_seed(3)
    first = loader(frames)
    torch.manual_seed(3)
    assert torch.equal(loader(frames), first)
    still = _texture(1, 48, 64).repeat(5, 1, 1, 1)  # five identical frames stay identical: one draw per clip
    out = loader(still)
    assert all(torch.equal(out[t], out[0]) for t in range(5))


def test_device_part_normalises_augments_strong_views_per_clip_and_follows_the_seed() -> None:
    opts = transforms.SpatialOptions(input_size=24, resize_min=24, resize_max=24, randaug_ops=2, randaug_magnitude=9)
    finish = transforms.DeviceFinish(opts, {"primary_weak": "weak", "primary_strong": "strong"})
    clip = _texture(1, 24, 24).repeat(6, 1, 1, 1)  # six identical frames
    batch = {"primary_weak": torch.stack([clip] * 4), "primary_strong": torch.stack([clip] * 4), "label": torch.arange(4)}
    torch.manual_seed(0)
    out = finish(batch)
    weak, strong = out["primary_weak"], out["primary_strong"]
    for x in (weak, strong):
        assert x.dtype == torch.float32 and x.shape == (4, 3, 6, 24, 24) and x.is_contiguous()
    expected = (clip.permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    assert all(torch.allclose(weak[b], expected, atol=1e-5) for b in range(4))
    assert torch.equal(out["label"], batch["label"]) and batch["primary_strong"].dtype == torch.uint8  # input kept
    for b in range(4):
        assert not torch.allclose(strong[b], weak[b])
        assert all(torch.equal(strong[b, :, t], strong[b, :, 0]) for t in range(6))  # one draw for all frames
        assert (strong[b] == 0).all(dim=(0, 1)).sum() >= 20  # a cutout (at least 5% of 24x24) in every clip
    assert len({strong[b].sum().item() for b in range(4)}) == 4  # each clip its own operations and cutout
    torch.manual_seed(0)
    again = finish(batch)
    assert torch.equal(again["primary_strong"], strong)
    assert not torch.equal(finish(batch)["primary_strong"], strong)
    no_cutout = transforms.DeviceFinish(replace(opts, cutout=False), {"primary_strong": "strong"})(batch)["primary_strong"]
    assert sum(not torch.allclose(no_cutout[b], weak[b]) for b in range(4)) >= 3  # RandAugment alone changes clips
    assert len({no_cutout[b].sum().item() for b in range(4)}) > 1  # and draws for each clip, not once per batch
    plain = transforms.DeviceFinish(opts, {"primary_weak": "weak", "primary_strong": "weak"})(batch)
    assert torch.equal(plain["primary_strong"], weak)  # without spatial augmentation the strong view is the weak one


def test_reader_skips_and_counts_unreadable_videos(tiny_dataset: Path, tmp_path: Path) -> None:
    index = read_ucf101(tiny_dataset)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    records = [index.train[0].__class__(path=str(broken), label=0, name="broken.avi"), index.train[1]]
    reader = VideoReader(cache=True)
    with pytest.raises(VideoDecodeError):
        reader.read(str(broken))
    dataset = TrainClips(records, reader, {"primary": ClipSpec(4, 2)}, {"weak": transforms.geometric(
        transforms.SpatialOptions(input_size=32, resize_min=32, resize_max=32))})
    item = dataset[0]
    assert item["index"] == 1 and item["primary_weak"].shape == (4, 32, 32, 3) and item["primary_weak"].dtype == torch.uint8
    assert list(reader.failed) == [str(broken)]


def test_test_clips_stack_every_view(tiny_dataset: Path) -> None:
    index = read_ucf101(tiny_dataset)
    opts = transforms.SpatialOptions(input_size=24, resize_min=24, resize_max=24)
    dataset = EvalClips(index.test, VideoReader(), {"primary": ClipSpec(4, 4), "aux": ClipSpec(8, 2)}, 3,
                        transforms.test_views(opts, crops=2))
    item = dataset[0]
    assert item["primary"].shape == (6, 3, 4, 24, 24)
    assert item["aux"].shape == (6, 3, 8, 24, 24)


def encode(path: Path, frames: int, codec: str, gop: int, size: tuple[int, int] = (64, 48)) -> torch.Tensor:
    """A video whose every frame differs (a bar moves, the brightness steps), keyframes every ``gop`` frames;
    returns what decoding it whole gives."""
    import av

    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = width, height, "yuv420p", gop
        for t in range(frames):
            image = np.full((height, width, 3), (t * 4) % 256, np.uint8)
            image[:, (t * 3) % width : (t * 3) % width + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return decode(str(path))


def decoder_named(name: str) -> Decoder:
    """The decoder of that name, torchcodec made ready first (or the test skipped, saying why)."""
    if name == "torchcodec":
        torchcodec_ready()
    return DECODERS[name]


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize(("name", "codec"), [("clip.avi", "mpeg4"), ("clip.mp4", "libx264")])
def test_span_decoding_gives_the_frames_of_a_whole_decode(tmp_path: Path, name: str, codec: str, decoder: str) -> None:
    """Seeking to the keyframe before the first frame asked for and decoding to the last gives exactly the whole
    decode's frames, for spans at the start, inside a group of pictures, across keyframes, at the end, sparse; with
    either library, and torchcodec's whole decode is PyAV's, bit for bit."""
    path = tmp_path / name
    whole = encode(path, 70, codec, gop=12)
    lib = decoder_named(decoder)
    assert torch.equal(lib.decode(str(path)), whole)
    assert lib.count_frames(str(path)) == len(whole) == 70
    for start, stop in ((0, 5), (13, 14), (17, 41), (24, 36), (50, 70)):
        assert torch.equal(lib.decode_frames(str(path), np.arange(start, stop)), whole[start:stop]), (start, stop)
    sparse = np.array([3, 17, 18, 40, 69])  # only these are converted; the rest of the span is decoded, not kept
    assert torch.equal(lib.decode_frames(str(path), sparse), whole[sparse])
    # The reader decodes one span for all of an item's clips; a video shorter than a clip loops (whole decode).
    reader = VideoReader(decoder=decoder)
    picks = [np.array([30, 34, 38]), np.array([33, 35, 37, 39, 41])]
    clips = reader.clips(str(path), lambda count: picks)
    assert all(torch.equal(c, whole[p]) for c, p in zip(clips, picks))
    looped = reader.clips(str(path), lambda count: [sampling.clip_at(count, 40, 2, 60)])
    assert torch.equal(looped[0], whole[(60 + 2 * np.arange(40)) % 70])


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_span_reader_counts_an_unreadable_video_once(tmp_path: Path, decoder: str) -> None:
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    decoder_named(decoder)
    reader = VideoReader(decoder=decoder)
    for _ in range(2):
        with pytest.raises(VideoDecodeError):
            reader.clips(str(broken), lambda count: [np.arange(4)])
        with pytest.raises(VideoDecodeError):
            reader.read(str(tmp_path / "missing.mp4"))
    assert list(reader.failed) == [str(broken), str(tmp_path / "missing.mp4")]


def test_fused_normalisation_equals_torchvisions() -> None:
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    video = tv_tensors.Video(torch.randint(0, 256, (4, 3, 10, 12), dtype=torch.uint8))
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(transforms.MEAN, transforms.STD)])(video)
    ours = transforms.normalise(video)
    assert isinstance(ours, tv_tensors.Video) and torch.allclose(ours, reference, atol=1e-5)
    clips = video.as_subclass(torch.Tensor).permute(1, 0, 2, 3)  # (C, T, H, W) strides: the output is contiguous anyway
    permuted = transforms.normalise(clips, channel_dim=0)
    assert permuted.is_contiguous() and torch.allclose(permuted, reference.as_subclass(torch.Tensor).permute(1, 0, 2, 3), atol=1e-5)


def test_consecutive_clips_tile_a_stretch_and_the_long_clip_lines_up_with_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        *local, long = consecutive_clips(100, ClipSpec(4, 2), 3, rng)
        start = local[0][0]
        assert [c.tolist() for c in local] == [list(range(start + 8 * t, start + 8 * t + 8, 2)) for t in range(3)]
        assert long.tolist() == list(range(start, start + 24, 6)) and long[-1] <= local[-1][-1]  # within the stretch
    # 6 long frames in 3 parts of 2: part t starts with clip t's first frame
    *local, long = consecutive_clips(1000, ClipSpec(6, 2), 3, np.random.default_rng(1))
    assert [long[2 * t] for t in range(3)] == [clip[0] for clip in local]
    # a video shorter than the stretch loops, as every clip does
    assert all(c.max() < 10 for c in consecutive_clips(10, ClipSpec(4, 2), 3, rng))
    path = tmp_path / "clip.avi"
    encode(path, 60, "mpeg4", gop=12)
    record = VideoRecord(path=str(path), label=0, name="clip.avi")
    crop = transforms.geometric(transforms.SpatialOptions(input_size=24, resize_min=24, resize_max=28))
    item = ConsecutiveClips([record], VideoReader(), ClipSpec(4, 2), 3, crop)[0]
    assert item["clips_a"].shape == item["clips_b"].shape == (3, 4, 24, 24, 3) and item["long"].shape == (4, 24, 24, 3)
    assert item["clips_a"].dtype == torch.uint8 and not torch.equal(item["clips_a"], item["clips_b"])  # two augmentations
    with pytest.raises(ValueError, match="n must be at least 2"):
        ConsecutiveClips([record], VideoReader(), ClipSpec(4, 2), 1, crop)
