build-fp/fs/catalog.o: fs/catalog.c fs/catalog.h chain/chain.h \
 chain/layer_io.h lvm/lvm.h lvm/../chain/chain.h lvm/../chain/layer_io.h \
 common/log.h fs/options.h
fs/catalog.h:
chain/chain.h:
chain/layer_io.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
common/log.h:
fs/options.h:
