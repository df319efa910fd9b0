build-fp/lvm/store.o: lvm/store.c lvm/lvm.h lvm/../chain/chain.h \
 lvm/../chain/layer_io.h lvm/../chain/layer_io.h
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
