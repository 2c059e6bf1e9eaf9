"""The controllers of `kubelite controller-manager`, one module each, registered here by name."""

REGISTRY: dict[str, str] = {
    # name (as kube-controller-manager's --controllers calls it): "module:Class"
    "replicaset": "kubelite.controllers.replicaset:ReplicaSetController",
    "replicationcontroller": "kubelite.controllers.replicaset:ReplicationManager",
    "deployment": "kubelite.controllers.deployment:DeploymentController",
    "statefulset": "kubelite.controllers.statefulset:StatefulSetController",
    "daemonset": "kubelite.controllers.daemonset:DaemonSetController",
    "job": "kubelite.controllers.job:JobController",
    "cronjob": "kubelite.controllers.cronjob:CronJobController",
    "servicelb": "kubelite.controllers.servicelb:ServiceLBController",
    "garbagecollector": "kubelite.controllers.garbagecollector:GarbageCollector",
    "namespace": "kubelite.controllers.namespace:NamespaceController",
    "podgc": "kubelite.controllers.podgc:PodGC",
    "serviceaccount": "kubelite.controllers.serviceaccount:ServiceAccountsController",
    "root-ca-cert-publisher": "kubelite.controllers.rootcacertpublisher:RootCACertPublisher",
    "endpoint": "kubelite.controllers.endpoints:EndpointsController",
    "endpointslice": "kubelite.controllers.endpointslice:EndpointSliceController",
    "resourcequota": "kubelite.controllers.resourcequota:ResourceQuotaController",
    "disruption": "kubelite.controllers.disruption:DisruptionController",
    "ttl-after-finished": "kubelite.controllers.ttlafterfinished:TTLAfterFinishedController",
    "nodelifecycle": "kubelite.controllers.nodelifecycle:NodeLifecycleController",
    "taint-eviction-controller": "kubelite.controllers.nodelifecycle:TaintEvictionController",
    "nodeipam": "kubelite.controllers.nodeipam:NodeIpamController",
    "horizontalpodautoscaling": "kubelite.controllers.horizontalpodautoscaler:HorizontalPodAutoscalerController",
}
