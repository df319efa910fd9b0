build-fp/lvm/pve_storage.o: lvm/pve_storage.c lvm/pve_storage.h \
 common/log.h
lvm/pve_storage.h:
common/log.h:
