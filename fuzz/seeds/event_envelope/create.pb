
€âÏªk8s.io/tasks/create"R
0types.containerd.io/containerd.events.TaskCreate
c1	/run/b/c1"
/in/out0*