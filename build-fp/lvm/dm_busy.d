build-fp/lvm/dm_busy.o: lvm/dm_busy.c lvm/dm_busy.h
lvm/dm_busy.h:
