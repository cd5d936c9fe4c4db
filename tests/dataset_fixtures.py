"""Dataset fixtures for the tests: tiny copies of the four benchmarks in their exact official
formats (and their archives, which tests/data/test_download.py serves from 127.0.0.1), a tiny
image transform, and freshly generated glyphs.

Each ``make_*`` writes a few 8x8 JPEGs plus the official annotation files under ``root`` and
returns ``{relative image path: official class id}`` for the images it wrote, so tests can
check the loaders against the annotations.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms as T

from dmlkit import data
from dmlkit.data import glyphs as glyphs_module


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = ((value * 37) % 256, (value * 91) % 256, (value * 13) % 256)
    Image.new("RGB", (8, 8), rgb).save(path, format="JPEG")


# CUB-200-2011: class ids straddle the 100 / 101 split.
CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross",
               100: "100.Brown_Pelican", 101: "101.White_Pelican",
               150: "150.Sage_Thrasher", 200: "200.Common_Yellowthroat"}
CUB_IMAGES_PER_CLASS = 3


def make_cub(base: Path) -> dict[str, int]:
    """``base/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/}``."""
    d = base / "CUB_200_2011"
    d.mkdir(parents=True, exist_ok=True)
    truth, images, labels = {}, [], []
    image_id = 0
    for cid, folder in CUB_CLASSES.items():
        bird = folder.split(".", 1)[1]
        for k in range(CUB_IMAGES_PER_CLASS):
            image_id += 1
            rel = f"{folder}/{bird}_{k + 1:04d}_{700 + image_id}.jpg"
            _jpeg(d / "images" / rel, cid)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            truth[str(Path("CUB_200_2011", "images", rel))] = cid
    (d / "images.txt").write_text("\n".join(images) + "\n")
    (d / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    names = [f"{c} {CUB_CLASSES.get(c, f'{c:03d}.Bird_{c}')}" for c in range(1, 201)]
    (d / "classes.txt").write_text("\n".join(names) + "\n")
    split = [f"{i + 1} {i % 2}" for i in range(image_id)]
    (d / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")
    return truth


def cub_archive_bytes(tmp: Path) -> bytes:
    """``CUB_200_2011.tgz`` with the fixture, laid out like the official archive."""
    src = tmp / "cub_src"
    make_cub(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src / "CUB_200_2011", arcname="CUB_200_2011")
        tf.add(src / "attributes.txt", arcname="attributes.txt")
    return buf.getvalue()


# Cars196: classes 1-98 train, 99-196 test.
CARS_CLASSES = (1, 50, 98, 99, 150, 196)


def make_cars(base: Path, images_per_class: int = 2) -> dict[str, int]:
    """``base/car_ims/NNNNNN.jpg`` and ``base/cars_annos.mat`` (struct array + class_names)."""
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows, truth = [], {}
    n = 0
    for cid in CARS_CLASSES:
        for k in range(images_per_class):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            _jpeg(base / rel, cid)
            truth[rel] = cid
            rows.append((rel, 1 + k, 2, 7, 8, cid, n % 2))
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        ann[0, i]["relative_im_path"] = np.array([row[0]])
        for f, v in zip(fields[1:], row[1:]):
            ann[0, i][f] = np.array([[v]], dtype=np.uint8 if f == "test" else np.uint16)
    names = np.empty((1, 196), dtype=object)
    for c in range(196):
        names[0, c] = np.array([f"Make Model {c + 1} 2012"])
    savemat(base / "cars_annos.mat", {"annotations": ann, "class_names": names})
    return truth


# Stanford Online Products: Ebay_train.txt classes 1..11318, Ebay_test.txt 11319..22634.
SOP_TRAIN = ((1, 1, "bicycle_final"), (2, 1, "bicycle_final"), (3, 3, "chair_final"))
SOP_TEST = ((11319, 1, "bicycle_final"), (11320, 5, "kettle_final"),
            (22634, 12, "toaster_final"))


def make_sop(base: Path, images_per_class: int = 2) -> dict[str, int]:
    d = base / "Stanford_Online_Products"
    truth = {}
    image_id = 0
    for name, classes in (("Ebay_train.txt", SOP_TRAIN), ("Ebay_test.txt", SOP_TEST)):
        lines = ["image_id class_id super_class_id path"]
        for cid, super_id, folder in classes:
            for k in range(images_per_class):
                image_id += 1
                rel = f"{folder}/{111085122800 + cid}_{k}.JPG"
                _jpeg(d / rel, cid)
                lines.append(f"{image_id} {cid} {super_id} {rel}")
                truth[str(Path("Stanford_Online_Products", rel))] = cid
        (d / name).write_text("\n".join(lines) + "\n")
    return truth


# In-shop: items with train / query / gallery images.
INSHOP_ITEMS = (
    ("WOMEN/Dresses", 2, ("train", "train", "train")),
    ("MEN/Denim", 80, ("train", "train")),
    ("WOMEN/Blouses_Shirts", 7, ("query", "gallery", "gallery")),
    ("MEN/Tees_Tanks", 12, ("query", "query", "gallery")),
    ("WOMEN/Skirts", 33, ("gallery", "query")),
)


def make_inshop(base: Path) -> dict[str, tuple[int, str]]:
    """``base/img/...jpg`` and ``base/Eval/list_eval_partition.txt``."""
    rows, truth = [], {}
    for folder, item, statuses in INSHOP_ITEMS:
        for k, status in enumerate(statuses):
            rel = f"img/{folder}/id_{item:08d}/{k + 1:02d}_{k + 1}_front.jpg"
            _jpeg(base / rel, item)
            rows.append(f"{rel}  id_{item:08d}  {status}")
            truth[rel] = (item, status)
    (base / "Eval").mkdir(parents=True, exist_ok=True)
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n"
    (base / "Eval" / "list_eval_partition.txt").write_text(text)
    return truth


def zip_folder(folder: Path, archive: Path, arc_prefix: str) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, str(Path(arc_prefix) / path.relative_to(folder)))


#: a tiny image transform for the benchmark fixtures' 8x8 JPEGs
TINY = T.Compose([T.Resize(4), T.ToTensor()])


def fresh_glyphs(**kw):
    """A Glyphs dataset generated anew (the in-memory cache cleared first)."""
    glyphs_module._CACHE.clear()
    return data.Glyphs(**kw)
