"""ImageLocality: prefer nodes that already have the pod's images, weighted by how widely they are spread."""

from __future__ import annotations

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB
PRE_SCORE_KEY = "PreScoreImageLocality"


def normalized_image_name(name: str) -> str:
    """An image name with ":latest" when it has no tag."""
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    return name


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    """Scale the summed image scores between the thresholds into [0, MAX_NODE_SCORE]."""
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


class ImageLocality(PreScorePlugin, ScorePlugin):
    """Score sum(image size * fraction of nodes having it) over the pod's containers present on the node."""

    name = "ImageLocality"

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        spec = pod.pod.get("spec") or {}
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        images = [normalized_image_name(c.get("image") or "") for c in containers]
        snapshot = self.handle.snapshot
        spread = {image: snapshot.image_num_nodes(image) for image in set(images)}
        if not any(spread.values()):
            return SKIP  # no node has any of the images: every node scores 0
        state.data[PRE_SCORE_KEY] = (images, spread, max(snapshot.num_nodes(), 1), max(len(containers), 1))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        images, spread, total_nodes, num_containers = state.data[PRE_SCORE_KEY]
        total = 0
        for image in images:
            size = node.images.get(image)
            if size is not None:
                total += int(size * (spread[image] / total_nodes))
        return calculate_priority(total, num_containers)
