build-fp/lvm/lv_io.o: lvm/lv_io.c common/log.h lvm/lvm.h \
 lvm/../chain/chain.h lvm/../chain/layer_io.h lvm/../chain/layer_io.h
common/log.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
