
€âÏªdefault/tasks/exit"6
containerd.events.TaskExit
c1c1Ò	 ‰*€âÏª