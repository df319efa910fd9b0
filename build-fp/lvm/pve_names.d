build-fp/lvm/pve_names.o: lvm/pve_names.c lvm/lvm.h lvm/../chain/chain.h \
 lvm/../chain/layer_io.h lvm/../chain/layer_io.h
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
